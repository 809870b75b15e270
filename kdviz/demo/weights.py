"""Demo weights: safetensors files in the repo's assets/ (never pickle), and the pair descriptions in demo.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kdviz.demo.models import build
from kdviz.errors import KdvizError


def assets_dir() -> Path:
    """Where the demo weights live: $KDVIZ_ASSETS, the wheel's bundled copy, or the source checkout's assets/."""
    if os.environ.get("KDVIZ_ASSETS"):
        return Path(os.environ["KDVIZ_ASSETS"])
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_assets", here.parent / "assets"):
        if (candidate / "demo.json").is_file():
            return candidate
    raise KdvizError("the demo weights (assets/demo.json) were not found; run `kdviz demo --retrain` or set KDVIZ_ASSETS")


def save_model(model: nn.Module, path: Path, dtype: torch.dtype = torch.float32) -> None:
    tensors = {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path))


def load_model(kind: str, kwargs: dict[str, Any], path: Path) -> nn.Module:
    """Build a demo model and load its weights (cast back to float32); it is returned in eval mode."""
    model = build(kind, kwargs)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    model.load_state_dict(state)
    return model.eval()


def read_manifest(directory: Path | None = None) -> dict[str, Any]:
    return json.loads(((directory or assets_dir()) / "demo.json").read_text(encoding="utf-8"))


def load_tokenizers(pair: str, directory: Path | None = None) -> dict[str, Any]:
    """{"teacher": …, "student": …}: the Hugging Face fast tokenizers of a demo pair that has its own (``crosslm``)."""
    from kdviz.demo.tokenizers import load_tokenizer

    directory = directory or assets_dir()
    entry = read_manifest(directory)["pairs"][pair]
    if "tokenizer" not in entry["teacher"]:
        raise KdvizError(f"the demo pair {pair!r} has no tokenizers of its own")
    return {role: load_tokenizer(directory / entry[role]["tokenizer"]) for role in ("teacher", "student")}


def load_pair(pair: str, directory: Path | None = None) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(teacher, student, manifest entry) of one demo pair: ``cnn``, ``vit``, ``charlm`` or ``crosslm``."""
    directory = directory or assets_dir()
    entry = read_manifest(directory)["pairs"][pair]
    models = [load_model(entry[role]["kind"], entry[role]["kwargs"], directory / entry[role]["file"]) for role in ("teacher", "student")]
    return models[0], models[1], entry
