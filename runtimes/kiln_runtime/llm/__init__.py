"""The ``llm`` runtime: a causal language model behind the OpenAI API (chat and completions,
streaming as server-sent events), with weights from the platform's model cache."""
