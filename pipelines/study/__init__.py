"""The study: its config (``config``), the stage machinery (``engine``), one function per stage
(``stages``, ``review``), the study folder's layout (``layout``) and the report (``report``)."""
