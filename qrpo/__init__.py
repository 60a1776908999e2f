"""qrpo: Quantile Reward Policy Optimization (arXiv 2507.08068) for code models.

Kept tiny on purpose: importing ``qrpo`` must not import torch, so that data-pipeline nodes can use
``qrpo.quantile`` with numpy alone.
"""

__version__ = "0.1.0"
