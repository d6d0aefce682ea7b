"""Interactive widgets over a result (ipywidgets), imported lazily so ``import qwen_magics`` stays light."""
