"""The Qwen that runs in the kernel: finding, loading and installing its weights and runtime."""
