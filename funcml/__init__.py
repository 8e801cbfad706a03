"""funcml: medical signals as neural fields (MedFuncta), and machine learning on their latent vectors."""

__version__ = "0.1.0"
