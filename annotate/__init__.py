"""quantmedic.annotate: human verification of the judge's verdicts in Argilla.

``push`` sends verdicts (sampled within strata, with weights) as records whose suggestions are the
judge's answers; ``pull`` turns submitted responses into Review records; ``report`` measures the
judge's diagnostic accuracy against them (Wilson intervals, confusion, agreement) and ``figures``
draws it; ``settings`` is the Argilla dataset's design (fields, questions, metadata, guidelines);
``connection`` reaches a server; ``server`` runs a local Argilla without Docker (``argilla_plugin``
holds what runs inside the server's own environment: ``launcher.py``, the program it starts, and
the search engine it plugs in).
"""
