"""Models: loading every kind of checkpoint (``loading``), quantizing (``quantize``), generating
solutions through a backend (``generation``, ``engines``) and continuing failures (``continuations``).
Each settings model sits beside its module (``quantize_config``, ``generation_config``)."""
