"""quantmedic.annotate (see the open issues for what it will hold)."""
