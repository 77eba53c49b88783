"""sparkstack: declarative provisioning of an NVIDIA DGX Spark as a local LLM serving box."""

__version__ = "0.1.0"
