"""Training and fine-tuning of EMMA's U-Fuser (optional extra: ``pip install emmafuse[train]``).

Stages (Zhao et al., CVPR 2024, Sec. 3.3):

1. pseudo ground truth for the training pairs (:mod:`~emmafuse.train.pseudo_gt`);
2. stage II: pseudo sensing U-Nets A_i, A_v trained to map fused images back to each
   source, then frozen (:mod:`~emmafuse.train.sensing`);
3. stage III: the U-Fuser trained with the sensing + equivariance loss of Eq. (4)
   (:mod:`~emmafuse.train.stages`, :mod:`~emmafuse.train.transforms`);
4. export to the ``.safetensors`` weights format that ``emmafuse.load`` reads.

Python API::

    from emmafuse.train import TrainConfig, Trainer
    cfg = TrainConfig()
    cfg.data.ir_dir, cfg.data.vis_dir, cfg.out_dir = "pairs/ir", "pairs/vi", "runs/mine"
    weights = Trainer(cfg).run_all()

Command line: ``emmafuse train all --ir pairs/ir --vis pairs/vi --out runs/mine``.
Inference code never imports this package.
"""

from emmafuse.train.config import (
    BootstrapConfig,
    ConfigError,
    DataConfig,
    FuserStageConfig,
    SensingConfig,
    TrainConfig,
)
from emmafuse.train.data import DataError
from emmafuse.train.export import export_fuser, export_run
from emmafuse.train.run_folder import RunFolderError
from emmafuse.train.loop import StageResult
from emmafuse.train.stage_checkpoints import load_sensing
from emmafuse.train.trainer import Trainer, TrainingHalted

__all__ = [
    "TrainConfig",
    "DataConfig",
    "SensingConfig",
    "BootstrapConfig",
    "FuserStageConfig",
    "ConfigError",
    "DataError",
    "RunFolderError",
    "TrainingHalted",
    "Trainer",
    "StageResult",
    "load_sensing",
    "export_fuser",
    "export_run",
]
