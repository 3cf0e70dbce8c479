"""quantmedic.medicine (see the open issues for what it will hold)."""
