"""Model files: training checkpoints (.pt), exported models (model.safetensors +
config.json), the models shipped in the package, and loading any of them safely.

A checkpoint holds the trained tensors (the head, and any fine-tuned backbone blocks),
the settings and the backbone's tensor fingerprint; the frozen backbone is named, never
copied. Everything is read as data: ``torch.load(weights_only=True)`` or safetensors, with
every setting checked (:class:`~bloomseg.model.config.ModelConfig`) before a module is built.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from bloomseg.backbone.vit import DinoVisionTransformer
from bloomseg.errors import BloomsegError, CheckpointError, ConfigError
from bloomseg.model.config import ModelConfig
from bloomseg.model.network import SegmentationModel

CHECKPOINT_KIND = "bloomseg-segmentation-model"
PACKAGED = Path(__file__).resolve().parent / "packaged"
"""Models shipped inside the package, one folder each (``default``: the best model trained
here on real smears, see its MODEL_CARD.md)."""
EXPORT_FILES = ("model.safetensors", "config.json")


def module_fingerprint(module: nn.Module) -> str:
    """sha256 of a module's tensors (names, dtypes, shapes, values).

    The same weights give the same fingerprint whatever file layout they came from.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return digest.hexdigest()


def trainable_state(model: SegmentationModel) -> dict[str, Tensor]:
    """What training changes: the head (weights and batch-norm statistics) and any
    fine-tuned backbone blocks. The frozen backbone is named by its weights instead."""
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    return {name: t.detach().clone() for name, t in model.state_dict().items()
            if name.startswith("head.") or name in tuned}


def save_checkpoint(path: str | Path, model: SegmentationModel, info: dict) -> None:
    """Write a model checkpoint atomically, readable with ``torch.load(weights_only=True)``.

    Args:
        path: the .pt file.
        model: the trained model.
        info: JSON-like data kept beside the weights; must hold ``config`` (the training
            settings, :class:`~bloomseg.model.config.ModelConfig`'s among them) and
            ``backbone_fingerprint`` (None for the unet).
    """
    _save(path, CHECKPOINT_KIND, info, trainable_state(model))


def _save(path: str | Path, kind: str, info: dict, state: dict[str, Tensor]) -> None:
    """Write ``info`` and ``state`` as a ``kind`` checkpoint, atomically."""
    from bloomseg import __version__
    from bloomseg.files import atomic_output

    with atomic_output(path) as f:
        torch.save({"kind": kind, "bloomseg": __version__, **info, "state": state}, f)


def _resolve(name: str | Path, exported: str) -> Path | None:
    """What a name means where it is a folder or a file: a packaged folder by its name,
    a folder holding ``exported`` (itself), a run folder (its best.pt), a file; None for
    a folder holding neither; a path that does not exist as it is."""
    path = Path(name)
    if not path.exists() and (PACKAGED / str(name)).is_dir():
        path = PACKAGED / str(name)
    if not path.is_dir():
        return path
    if (path / exported).is_file():
        return path
    return path / "best.pt" if (path / "best.pt").is_file() else None


def resolve_model(name: str | Path) -> Path:
    """The checkpoint a model name or path means.

    Args:
        name: a packaged model's name (``default``), a run folder (its best.pt), an
            exported model folder (model.safetensors + config.json), or a .pt file.

    Raises:
        CheckpointError: none of these.
    """
    path = _resolve(name, EXPORT_FILES[0])
    if path is None:
        raise CheckpointError(f"{name}: neither a training run (best.pt) nor an exported model "
                              f"({' + '.join(EXPORT_FILES)})")
    if not path.is_file() and not path.is_dir():
        shipped = ", ".join(sorted(p.name for p in PACKAGED.iterdir() if p.is_dir())) \
            if PACKAGED.is_dir() else "none"
        raise CheckpointError(f"{path}: no such model file or folder (models shipped: {shipped})")
    return path


def carries_classifier(path: Path) -> bool:
    """Whether a resolved model (:func:`resolve_model`) has a cell classifier beside it
    (an exported folder with :data:`CLASSIFIER_FILES`)."""
    return path.is_dir() and (path / CLASSIFIER_FILES[0]).is_file()


def read_checkpoint_file(path: str | Path) -> dict:
    """A bloomseg model checkpoint as a dict (safely: no code runs while loading), from a
    .pt file or an exported folder.

    Raises:
        CheckpointError: unreadable, or not a bloomseg model checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        return _read_exported(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged or unsafe files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a bloomseg model checkpoint (best.pt or last.pt "
                              "of a `bloomseg train` run)")
    check_written_by(payload.get("bloomseg"), path)
    return payload


def check_written_by(version: object, path: str | Path) -> None:
    """Refuse a checkpoint or run written by a newer bloomseg (by major.minor): its
    settings may mean what this version does not know. Older files are read, with the
    defaults of their time for settings added since.

    Raises:
        CheckpointError: naming the file and both versions.
    """
    from bloomseg import __version__

    def major_minor(text: object) -> tuple[int, int]:
        major, minor = (str(text).split(".") + ["0"])[:2]
        return int(major), int(minor)

    if version is None:  # written before versions were recorded
        return
    try:
        written = major_minor(version)
    except ValueError:
        raise CheckpointError(f"{path}: unreadable bloomseg version {version!r}") from None
    if written > major_minor(__version__):
        raise CheckpointError(f"{path}: written by bloomseg {version}, newer than this bloomseg "
                              f"{__version__}; upgrade bloomseg to use it")


def _read_exported(folder: Path) -> dict:
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, config = (folder / name for name in EXPORT_FILES)
    try:
        payload = json.loads(config.read_text("utf-8"))
        state = load_file(weights)
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"{folder}: not a readable exported model ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{config}: not a bloomseg model configuration")
    check_written_by(payload.get("bloomseg"), config)
    return payload | {"state": state}


def export_model(checkpoint: str | Path, folder: str | Path, overwrite: bool = False,
                 classifier: str | Path | None = None) -> Path:
    """Write a trained model as model.safetensors + config.json, the form that is shipped
    and shared: tensors in a format that holds no code, settings as readable JSON.

    The config holds the model's own settings (:data:`~bloomseg.model.config.MODEL_SETTINGS`),
    its tuned cell separation and its history; the backbone weights are named by their
    registry name and sha256, never by a path of the machine it was trained on.

    Args:
        checkpoint: a run folder, its best.pt, or another exported model.
        folder: where to write (created).
        overwrite: replace an exported model already there.
        classifier: a cell classifier to ship with it (:func:`export_classifier`); an
            exported ``checkpoint`` that holds one passes it on where none is given.

    Returns:
        ``folder`` as a Path.

    Raises:
        OutputExistsError: an exported model is there and ``overwrite`` is False.
    """
    from safetensors.torch import save

    from bloomseg.files import atomic_output, refuse_existing, save_json

    source = resolve_model(checkpoint)
    payload = read_checkpoint_file(source)
    folder = Path(folder)
    if classifier is None and carries_classifier(source):
        classifier = source
    if classifier is not None:
        read_classifier_file(resolve_classifier(classifier))  # refused before anything is written
    refuse_existing([folder / n for n in EXPORT_FILES + (CLASSIFIER_FILES if classifier else ())],
                    overwrite)
    state = {k: v.contiguous() for k, v in payload.pop("state").items()}
    config = _model_config(payload, checkpoint).as_dict()
    payload = {k: v for k, v in payload.items() if k in EXPORTED} | {"config": config}
    with atomic_output(folder / EXPORT_FILES[0]) as f:
        f.write(save(state))
    save_json(folder / EXPORT_FILES[1], payload)
    if classifier is not None and Path(classifier).resolve() != folder.resolve():
        export_classifier(classifier, folder, overwrite=True)
    return folder


EXPORTED = ("kind", "bloomseg", "epoch", "backbone_fingerprint", "weights_sha256", "layers",
            "history", "instances")
"""What an exported config.json holds beside the model settings (an allow-list: nothing
that names a file of the machine the model was made on)."""


def load_model(path: str | Path, backbone: DinoVisionTransformer | None = None,
               weights: str | Path | None = None) -> tuple[SegmentationModel, dict]:
    """Rebuild a trained model, in eval mode on the CPU.

    Args:
        path: the checkpoint: a .pt file or an exported folder (see :func:`resolve_model`).
        backbone: the backbone it was trained on, already loaded; default: load it by
            the name the checkpoint records, from ``weights``, the file the run was
            trained with where it still exists, or the weights cache (whose file must
            then have the sha256 the model records).
        weights: the backbone weights file, if not the cached download.

    Returns:
        (model, the checkpoint dict without its tensors; its ``config`` holds the
        :class:`~bloomseg.model.config.ModelConfig` settings, older files' gaps filled).

    Raises:
        CheckpointError: unreadable, invalid settings, or the backbone is not the one it
            was trained on.
    """
    payload = read_checkpoint_file(path)
    cfg = _model_config(payload, path)
    if cfg.backbone != "unet" and backbone is None:
        backbone = _load_backbone(cfg.backbone, weights, payload, path)
    if backbone is not None:
        found = module_fingerprint(backbone)
        if found != payload.get("backbone_fingerprint"):
            raise CheckpointError(
                f"{path}: trained on other backbone weights than those given (tensor "
                f"fingerprint {str(payload.get('backbone_fingerprint'))[:12]}, given {found[:12]})")
    try:
        model = SegmentationModel(cfg.head, backbone, out_channels=2 if cfg.centres else 1,
                                  unfreeze_blocks=cfg.unfreeze_blocks, unet_levels=cfg.unet_levels,
                                  size_head=cfg.size_head)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid model settings: {e}") from None
    state = payload.pop("state")
    expected = set(trainable_state(model))
    if set(state) != expected:
        raise CheckpointError(f"{path}: weights do not match a {cfg.head} model "
                              f"({len(set(state) ^ expected)} tensors differ in name)")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes that do not fit the settings
        raise CheckpointError(f"{path}: weights do not fit a {cfg.head} model: {e}") from None
    payload["config"] = payload["config"] | cfg.as_dict()
    return model.eval(), payload


def _model_config(payload: dict, path: str | Path) -> ModelConfig:
    """The checked settings a model file is rebuilt from; a model trained before its cell
    diameter was measured has it measured from its training data, where that is at hand.

    Raises:
        CheckpointError: the settings are missing or invalid.
    """
    if not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{path}: the model settings are missing or not a mapping")
    try:
        cfg = ModelConfig.from_dict(payload["config"])
    except (ConfigError, TypeError) as e:  # TypeError: a setting of the wrong type
        raise CheckpointError(f"{path}: invalid model settings: {e}") from None
    data = payload["config"].get("data")
    roots = [data] if isinstance(data, str) else data if isinstance(data, list) else []
    if cfg.cell_diameter is None and roots and all(Path(r).is_dir() for r in roots):
        from bloomseg.data.dataset import median_diameter, scan_split

        try:
            samples = [s for r in roots for s in scan_split(r, "train", need_mask=False).samples]
            cfg = replace(cfg, cell_diameter=median_diameter(samples))
        except BloomsegError:  # unreadable data: the size stays unknown
            pass
    return cfg


def _load_backbone(name: str, weights: str | Path | None, payload: dict,
                   path: str | Path) -> DinoVisionTransformer:
    """The backbone a model was trained on: ``weights`` if given, else the run's own
    file where it exists on this machine, else the cached file of its registry name,
    checked against the sha256 the model records."""
    from bloomseg.backbone import load_backbone, resolve_weights
    from bloomseg.files import sha256sum

    if weights is None:
        recorded = payload["config"].get("weights")
        if recorded and Path(recorded).is_file():
            weights = recorded
        else:
            cached = resolve_weights(name)
            expected = payload.get("weights_sha256")
            if expected and sha256sum(cached) != expected:
                raise CheckpointError(
                    f"{path}: trained on {name} weights of sha256 {expected[:12]}..., but the "
                    f"cached {cached} is another file; pass the right one with --weights")
            weights = cached
    return load_backbone(name, weights)


CLASSIFIER_KIND = "bloomseg-cell-classifier"
CLASSIFIER_FILES = ("classifier.safetensors", "classifier.json")
"""A classifier shipped beside an exported segmentation model (its cells' classes)."""


def save_classifier(path: str | Path, model: nn.Module, info: dict) -> None:
    """Write a cell classifier checkpoint atomically (``torch.load(weights_only=True)``).

    Args:
        path: the .pt file.
        model: a :class:`~bloomseg.model.classifier.CellClassifier`.
        info: JSON-like data kept beside the weights; must hold ``config`` (its
            :class:`~bloomseg.model.classifier.ClassifierConfig` settings).
    """
    _save(path, CLASSIFIER_KIND, info,
          {k: v.detach().clone() for k, v in model.state_dict().items()})


def resolve_classifier(name: str | Path) -> Path:
    """The classifier file or folder a name means: a classifier run folder (its best.pt),
    a .pt file, or a folder holding :data:`CLASSIFIER_FILES` (an exported model).

    Raises:
        CheckpointError: none of these.
    """
    path = _resolve(name, CLASSIFIER_FILES[0])
    if path is None:
        raise CheckpointError(f"{name}: holds no cell classifier ({' + '.join(CLASSIFIER_FILES)}, "
                              "or best.pt of a `bloomseg train-classes` run)")
    if not path.is_file() and not path.is_dir():
        raise CheckpointError(f"{path}: no such classifier file or folder")
    return path


def read_classifier_file(path: str | Path) -> dict:
    """A cell classifier checkpoint as a dict, read safely, from a .pt file or a folder
    holding :data:`CLASSIFIER_FILES`.

    Raises:
        CheckpointError: unreadable, or not a bloomseg cell classifier.
    """
    import json

    from safetensors.torch import load_file

    path = Path(path)
    try:
        if path.is_dir():
            weights, config = (path / n for n in CLASSIFIER_FILES)
            payload = json.loads(config.read_text("utf-8"))
            payload = payload | {"state": load_file(weights)} if isinstance(payload, dict) else payload
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types for damaged files
        raise CheckpointError(f"{path}: not a readable cell classifier ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("kind") != CLASSIFIER_KIND:
        raise CheckpointError(f"{path}: not a bloomseg cell classifier (best.pt of a "
                              "`bloomseg train-classes` run)")
    check_written_by(payload.get("bloomseg"), path)
    return payload


def load_classifier(path: str | Path):
    """Rebuild a cell classifier, in eval mode on the CPU.

    Returns:
        (:class:`~bloomseg.model.classifier.CellClassifier`, the checkpoint dict without
        its tensors).

    Raises:
        CheckpointError: unreadable, invalid settings, or weights that do not fit them.
    """
    from bloomseg.model.classifier import CellClassifier, ClassifierConfig

    payload = read_classifier_file(path)
    try:
        config = ClassifierConfig.from_dict(payload.get("config") or {})
    except ConfigError as e:
        raise CheckpointError(f"{path}: invalid classifier settings: {e}") from None
    model = CellClassifier(config)
    state = payload.pop("state")
    # a classifier from before its class centres (its labs, its memory) were kept
    # measures no distance (judges no run, adapts without a replay)
    state = {k: v for k, v in model.state_dict().items()
             if k in ("centres", "spread") or k.startswith(("lab_", "memory_"))} | state
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the classifier's settings: {e}") from None
    return model.eval(), payload


def export_classifier(classifier: str | Path, folder: str | Path, overwrite: bool = False) -> None:
    """Write a cell classifier beside an exported model: :data:`CLASSIFIER_FILES`.

    Raises:
        OutputExistsError: a classifier is there and ``overwrite`` is False.
    """
    from safetensors.torch import save

    from bloomseg.files import atomic_output, refuse_existing, save_json

    payload = read_classifier_file(resolve_classifier(classifier))
    folder = Path(folder)
    refuse_existing([folder / n for n in CLASSIFIER_FILES], overwrite)
    state = {k: v.contiguous() for k, v in payload.pop("state").items()}
    kept = {k: payload[k] for k in ("kind", "bloomseg", "config", "history") if k in payload}
    with atomic_output(folder / CLASSIFIER_FILES[0]) as f:
        f.write(save(state))
    save_json(folder / CLASSIFIER_FILES[1], kept)
