"""optfusion-lab: learned fusion (OptFusion) for deep click-through-rate models.

Importing the package is cheap: it does not import torch. The data preparation path
(``optfusion_lab.data``) stays torch-free so that ``optfusion-lab prepare`` starts fast.
"""

__version__ = "0.1.0"
