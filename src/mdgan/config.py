"""Typed configuration of a training run.

Every section is a pydantic model that rejects unknown keys, so a misspelt option is an error
naming the field instead of a silently ignored value. A configuration is read from YAML, JSON or
TOML with :func:`load_config` and adjusted with dotted overrides such as
``optim.lr_g=1e-4`` through :func:`apply_overrides`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "ConfigError",
    "DataConfig",
    "EmbedderConfig",
    "EvalConfig",
    "GrowthConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "PartitionConfig",
    "SelectorConfig",
    "TrainConfig",
    "apply_overrides",
    "describe_validation_error",
    "load_config",
]


class ConfigError(ValueError):
    """Raised when a configuration file or override cannot be read or is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Training images and how they are decoded."""

    source: Literal["fashion-mnist", "folder"] = Field(
        default="fashion-mnist", description="Built-in Fashion-MNIST, or a folder of images."
    )
    path: Path | None = Field(
        default=None,
        description="Image folder (source 'folder') or folder with the Fashion-MNIST idx files.",
    )
    split: Literal["train", "test"] = Field(default="train", description="Fashion-MNIST split.")
    image_size: int = Field(default=32, gt=0, description="Side of the square training images.")
    channels: Literal[1, 3] | None = Field(
        default=None, description="1 or 3; None keeps the dataset's own (1 for Fashion-MNIST)."
    )
    center_crop: int | Literal["auto"] | None = Field(
        default="auto",
        description="Square centre crop in pixels before resizing; 'auto' crops CelebA's "
        "img_align_celeba to 178x178, and None or 'auto' on other folders takes the centre "
        "square of the shorter side.",
    )
    max_images: int | None = Field(default=None, gt=0, description="Use only the first N images.")
    cache_dir: Path | None = Field(
        default=None,
        description="Where decoded uint8 arrays are cached; None uses ~/.cache/mdgan.",
    )
    download: bool = Field(
        default=True, description="Let torchvision download Fashion-MNIST when no local copy exists."
    )

    @model_validator(mode="after")
    def _folder_needs_path(self) -> DataConfig:
        if self.source == "folder" and self.path is None:
            raise ValueError("data.path is required when data.source is 'folder'")
        return self


class EmbedderConfig(_Section):
    """Feature extractor used to partition real images and to route generated ones."""

    kind: Literal["auto", "clip", "pixel"] = Field(
        default="auto",
        description="'auto' uses CLIP when its weights are available locally and pixels otherwise.",
    )
    clip_model: str = Field(default="ViT-B-32", description="open_clip architecture name.")
    clip_pretrained: str | None = Field(
        default="openai",
        description="open_clip pretrained tag, or a local checkpoint file (.pt, .bin, .safetensors).",
    )
    clip_cache_dir: Path | None = Field(default=None, description="open_clip download cache.")
    pixel_size: int = Field(default=8, gt=0, description="Side of the downsampled pixel features.")
    pixel_pca_components: int | None = Field(
        default=None, gt=0, description="Reduce pixel features to this many PCA components."
    )
    normalize: bool = Field(default=True, description="L2-normalise CLIP features.")
    batch_size: int = Field(default=256, gt=0, description="Images per batch when embedding a dataset.")


class PartitionConfig(_Section):
    """Split of the training set into classes, one discriminator per class."""

    method: Literal["ward", "prompts"] = Field(
        default="ward", description="Ward clustering of image features, or hand-written prompts."
    )
    num_classes: int = Field(default=4, gt=0, description="Classes at the last growth level.")
    mode: Literal["binary", "flat"] = Field(
        default="binary",
        description="Ward levels: 'binary' splits each class at its own top merge; 'flat' cuts "
        "the Ward tree at 1, 2, 4, ... classes.",
    )
    algorithm: Literal["auto", "exact", "microclusters", "subset"] = Field(
        default="auto",
        description="Ward algorithm: 'exact' (memory quadratic in the images), 'microclusters' "
        "(FAISS k-means, then Ward on the weighted centroids), 'subset' (exact Ward on "
        "max_exact_size random images, the rest join the nearest class mean) or 'auto' (exact "
        "up to max_exact_size images, micro-clusters above).",
    )
    max_exact_size: int = Field(
        default=20_000,
        gt=1,
        description="Largest set for exact Ward with algorithm 'auto', and the subset size of "
        "algorithm 'subset'.",
    )
    num_microclusters: int = Field(
        default=2048, gt=0, description="k-means clusters of algorithm 'microclusters'."
    )
    prompts: list[str] | None = Field(
        default=None, description="Leaf prompts, one class each (method 'prompts')."
    )
    prompt_hierarchy: list[Any] | None = Field(
        default=None,
        description="Prompts as a nested binary hierarchy, e.g. [[\"man with a smile\", "
        "\"man with a neutral face\"], [\"woman with a smile\", \"woman with a neutral face\"]]; "
        "replaces 'prompts' when given.",
    )
    prompt_templates: list[str] = Field(
        default_factory=lambda: ["a photo of a {}."],
        description="Templates with one '{}' for the prompt; their embeddings are averaged.",
    )
    seed: int = Field(default=0, description="Seed of the Ward subset.")

    @field_validator("prompt_hierarchy")
    @classmethod
    def _nested_strings(cls, hierarchy: list[Any] | None) -> list[Any] | None:
        def check(node: Any, path: str) -> None:
            if isinstance(node, str):
                return
            if not isinstance(node, list) or not 1 <= len(node) <= 2:
                raise ValueError(
                    f"node {path} must be a prompt or a list of one or two nodes, got {node!r}"
                )
            for index, child in enumerate(node):
                check(child, f"{path}[{index}]")

        if hierarchy is not None:
            check(hierarchy, "prompt_hierarchy")
        return hierarchy

    @model_validator(mode="after")
    def _check_prompts(self) -> PartitionConfig:
        if self.method == "prompts" and not self.prompts and not self.prompt_hierarchy:
            raise ValueError(
                "partition.prompts or partition.prompt_hierarchy is required when "
                "partition.method is 'prompts'"
            )
        if (
            self.method == "prompts"
            and "num_classes" in self.model_fields_set
            and self.prompts
            and self.prompt_hierarchy is None
            and self.num_classes != len(self.prompts)
        ):
            raise ValueError(
                f"partition.num_classes is {self.num_classes} but {len(self.prompts)} prompts are "
                "given; with prompts the class count is the prompt count, so drop num_classes"
            )
        for template in self.prompt_templates:
            if template.count("{}") != 1:
                raise ValueError(
                    f"partition.prompt_templates entry {template!r} must contain '{{}}' exactly once"
                )
        return self


class SelectorConfig(_Section):
    """Nearest-class-mean routing of generated images."""

    kind: Literal["torch", "faiss", "numba", "auto"] = Field(
        default="auto",
        description="Torch matrix product (runs on the training device), FAISS IndexFlatL2 "
        "(CPU), a fused Numba kernel (CPU; fastest for large batches and few classes), or "
        "'auto': the fastest of those available on the device for each batch size, timed on "
        "first use. All return the same classes.",
    )


class GrowthConfig(_Section):
    """Schedule of the growth of the discriminator bank."""

    kind: Literal["fixed", "constant"] = Field(
        default="fixed",
        description="'fixed' grows at milestones; 'constant' keeps one level from the start.",
    )
    unit: Literal["steps", "epochs"] = Field(default="epochs", description="Unit of the milestones.")
    milestones: list[int] = Field(
        default_factory=lambda: [50, 100],
        description="Start of growth levels 1, 2, ... in the chosen unit (fixed schedule).",
    )
    level: int = Field(
        default=2, ge=0, description="Growth level used from the start (constant schedule)."
    )

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, milestones: list[int]) -> list[int]:
        if any(m <= 0 for m in milestones):
            raise ValueError(f"milestones must be positive, got {milestones}")
        if any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be strictly increasing, got {milestones}")
        return milestones


class ModelConfig(_Section):
    """DCGAN generator and discriminator."""

    latent_dim: int = Field(default=100, gt=0, description="Length of the generator's noise vector.")
    generator_width: int = Field(default=64, gt=0, description="Channels of the last generator block.")
    discriminator_width: int = Field(
        default=64, gt=0, description="Channels of the first discriminator block."
    )
    discriminator_norm: Literal["batch", "none"] = Field(
        default="batch", description="Batch normalisation in the discriminator, or none."
    )
    discriminator_bank: Literal["routed", "vmapped"] = Field(
        default="routed",
        description="'routed': one call per discriminator on its sub-batch; 'vmapped': one call "
        "over stacked parameters (for GPUs; needs discriminator_norm 'none').",
    )


class OptimConfig(_Section):
    """Optimisers, loss and training length."""

    batch_size: int = Field(default=64, gt=0, description="Real and generated images per step.")
    lr_g: float = Field(default=2e-4, gt=0, description="Adam learning rate of the generator.")
    lr_d: float = Field(default=2e-4, gt=0, description="Adam learning rate of each discriminator.")
    betas: tuple[float, float] = Field(default=(0.5, 0.999), description="Adam betas.")
    loss: Literal["non-saturating", "hinge"] = Field(default="non-saturating", description="GAN loss.")
    epochs: int | None = Field(default=150, gt=0, description="Training length in epochs.")
    steps: int | None = Field(
        default=None, gt=0, description="Training length in steps; replaces epochs when set."
    )

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        return betas


class OutputConfig(_Section):
    """Run directory and the intervals at which it is written."""

    dir: Path = Field(default=Path("runs/mdgan"), description="Run directory.")
    overwrite: bool = Field(
        default=False,
        description="Replace an earlier run in output.dir; without it a new run there is an error.",
    )
    log_every: int = Field(default=50, gt=0, description="Steps between metrics.jsonl lines.")
    sample_every: int = Field(default=500, gt=0, description="Steps between sample grids.")
    checkpoint_every: int = Field(default=1000, gt=0, description="Steps between checkpoints.")
    num_samples: int = Field(default=64, gt=0, description="Images in each sample grid.")
    preview_per_class: int = Field(
        default=16, gt=0, description="Real images per class in the partition previews."
    )


class EvalConfig(_Section):
    """Evaluation of the generator by Fréchet distance, KID and class coverage (docs/metrics.md)."""

    every: int | None = Field(
        default=None, gt=0, description="Steps between evaluations during training; None turns them off."
    )
    metrics: list[Literal["fd", "kid", "coverage", "fid"]] = Field(
        default_factory=lambda: ["fd", "kid", "coverage"],
        description="'fd' and 'kid' in every feature space, 'coverage' of the classes, and 'fid' "
        "(the Fréchet distance in the Inception-v3 space, which needs its weights file).",
    )
    num_samples: int = Field(default=5000, gt=1, description="Generated images per evaluation.")
    feature_spaces: list[Literal["pixels", "fmnist-classifier", "clip", "inception"]] | None = Field(
        default=None,
        description="Feature spaces of 'fd' and 'kid'; None uses pixels, plus fmnist-classifier "
        "when data.source is 'fashion-mnist'.",
    )
    num_real: int | None = Field(
        default=None, gt=1, description="Real images for the real statistics (a seeded random subset); None uses all."
    )
    batch_size: int = Field(default=250, gt=0, description="Images per batch when generating and extracting features.")
    seed: int = Field(default=0, description="Seed of the generated noise, the real subset and the KID subsets.")
    kid_subsets: int = Field(default=100, gt=0, description="Random subsets KID averages over.")
    kid_subset_size: int = Field(default=1000, gt=1, description="Images of each set in one KID subset.")
    min_class_samples: int = Field(
        default=500, gt=1, description="Generated and real images a class needs for its own Fréchet distance."
    )
    dropped_share_ratio: float = Field(
        default=0.1,
        gt=0,
        lt=1,
        description="A class is a dropped mode when its share of generated images is below this "
        "fraction of its share of real images.",
    )
    classifier_weights: Path | None = Field(
        default=None,
        description="Weights of the Fashion-MNIST classifier; None uses the file shipped with mdgan.",
    )
    inception_weights: Path | None = Field(
        default=None,
        description="Inception-v3 weights file (pt_inception-2015-12-05-6726825d.pth); None looks "
        "in $MDGAN_CACHE_DIR/weights/ (~/.cache/mdgan/weights/).",
    )

    @field_validator("metrics", "feature_spaces")
    @classmethod
    def _unique_entries(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and (not values or len(set(values)) != len(values)):
            raise ValueError(f"must be a non-empty list without repeats, got {values}")
        return values


class TrainConfig(_Section):
    """Complete configuration of a CLIP-MDGAN training run."""

    data: DataConfig = Field(default_factory=DataConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    selector: SelectorConfig = Field(default_factory=SelectorConfig)
    growth: GrowthConfig = Field(default_factory=GrowthConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    seed: int = Field(default=0, description="Seed of weights, noise and data order.")
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        return device

    @model_validator(mode="after")
    def _check_lengths(self) -> TrainConfig:
        if self.optim.steps is None and self.optim.epochs is None:
            raise ValueError("set optim.steps or optim.epochs")
        if self.model.discriminator_bank == "vmapped" and self.model.discriminator_norm == "batch":
            raise ValueError(
                "model.discriminator_bank 'vmapped' needs model.discriminator_norm 'none', because "
                "batch statistics would mix the padded rows of the vmapped call into real ones"
            )
        if self.data.image_size not in (32, 64):
            raise ValueError(
                f"data.image_size must be 32 or 64 for the DCGAN networks, got {self.data.image_size}"
            )
        if "fmnist-classifier" in (self.eval.feature_spaces or []) and self.data.source != "fashion-mnist":
            raise ValueError(
                "eval.feature_spaces contains 'fmnist-classifier', which is trained on Fashion-MNIST "
                f"only, but data.source is {self.data.source!r}; choose 'pixels', 'clip' or 'inception'"
            )
        return self


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        else:
            raise ConfigError(f"unknown config format {suffix!r} for {path}: use .yaml, .json or .toml")
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot parse {path}: {error}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``values`` with dotted ``key=value`` overrides applied.

    Each value is parsed as YAML, so ``optim.lr_g=1e-4`` gives a float, ``growth.milestones=[5,10]``
    a list and ``data.path=/data/celeba`` a string.
    """
    result = json.loads(json.dumps(values, default=str))
    for override in overrides:
        key, separator, raw = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"invalid override {override!r}: expected KEY=VALUE, e.g. optim.lr_g=1e-4")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise ConfigError(f"cannot parse the value of override {override!r}: {error}") from error
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"invalid override {override!r}: {part!r} is not a section")
            node = child
        node[leaf] = value
    return result


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a configuration file (YAML, JSON or TOML), apply overrides and validate it.

    Without a path the defaults are used. Validation errors name every invalid field.
    """
    values = _read_mapping(Path(path)) if path is not None else {}
    values = apply_overrides(values, overrides or [])
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from error


def describe_validation_error(error: ValidationError) -> str:
    """Render a validation error as one line per field: the dotted key, what is wrong, the value."""
    lines = [f"invalid configuration ({error.error_count()} error(s)):"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "<root>"
        detail = item["msg"]
        if item["type"] == "extra_forbidden":
            detail = "unknown key" + _suggest_key(item["loc"])
        elif item["type"] == "value_error":
            # Our validators already name the value they reject.
            detail = detail.removeprefix("Value error, ")
        else:
            detail = f"{detail} (got {item.get('input')!r})"
        lines.append(f"  {location}: {detail}")
    return "\n".join(lines)


def _suggest_key(location: tuple) -> str:
    """Name the closest valid key to an unknown one, if any is close."""
    import difflib

    model: type[BaseModel] = TrainConfig
    for part in location[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    matches = difflib.get_close_matches(str(location[-1]), list(model.model_fields), n=1)
    if not matches:
        return ""
    prefix = ".".join(str(part) for part in location[:-1])
    return f"; did you mean {prefix + '.' if prefix else ''}{matches[0]}?"


def config_reference() -> str:
    """Render every configuration field with its type, default and description as Markdown.

    docs/configuration.md embeds this text; a test keeps the two in step.
    """
    sections = [("", TrainConfig)] + [
        (name, field.annotation)
        for name, field in TrainConfig.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Section)
    ]
    lines = []
    for prefix, model in sections:
        title = f"`{prefix}`" if prefix else "top level"
        lines += [f"### {title}", "", (model.__doc__ or "").strip(), ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, _Section):
                continue
            key = f"{prefix}.{name}" if prefix else name
            annotation = _type_name(field.annotation)
            default = field.get_default(call_default_factory=True)
            default_text = "required" if field.is_required() else json.dumps(default, default=str)
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {annotation} | `{default_text}` | {description} |")
        lines.append("")
    return "\n".join(lines)


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pathlib._local.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "")
    return text.replace("|", "\\|")
