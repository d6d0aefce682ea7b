"""The sampling lab: the local model's whole next-token distribution, the sampler's stages over it, and
generation stepped by hand (``qwen_magics.lab``, ``%qwen_lab``)."""
