"""The ``embeddings`` runtime: a sentence-transformers model behind OpenAI's ``/v1/embeddings``."""
