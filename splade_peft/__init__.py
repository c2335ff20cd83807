"""splade_peft: how should a SPLADE learned-sparse retriever be fine-tuned with parameter-efficient adapters?"""

__version__ = "0.1.0"
