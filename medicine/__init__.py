"""quantmedic.medicine: from diagnosed failures to a targeted DPO preference dataset.

``diagnoses`` resolves each verdict against its human reviews, ``contamination`` keeps evaluation
problems out, ``selection`` draws the failures to treat, ``pairs`` turns them into preference pairs
with lineage, ``export`` writes the Hugging Face dataset and its card, ``build`` runs them in order.
"""
