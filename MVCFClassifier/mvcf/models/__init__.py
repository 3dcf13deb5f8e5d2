"""Networks (`networks`) and the model bundle (`bundle`). Both import torch: import them only on heavy paths."""
