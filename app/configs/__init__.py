"""Configs in and out: a plan exported as ready-to-run training configuration (TRL, axolotl, accelerate, DeepSpeed),
and an axolotl or TRL config read into a plan. PyYAML lives here, never in the estimator."""

from app.configs.export import FORMATS, Exported, export_plan
from app.configs.imports import IMPORT_FORMATS, Imported, import_config

__all__ = ["FORMATS", "IMPORT_FORMATS", "Exported", "Imported", "export_plan", "import_config"]
