"""mdgan: one GAN generator trained against several specialised discriminators (CLIP-MDGAN).

The training set is embedded (:mod:`mdgan.embedders`), split into nested classes
(:mod:`mdgan.partitioners`), generated images are routed to the class of the nearest class
mean (:mod:`mdgan.selectors`), each class has its own discriminator
(:mod:`mdgan.discriminators`), and the bank of discriminators grows by splitting
(:mod:`mdgan.growth`). :class:`mdgan.trainer.Trainer` composes them.
"""

__version__ = "0.1.0"

from .config import TrainConfig, load_config  # noqa: E402
from .discriminators import DiscriminatorBank, RoutedDiscriminatorBank  # noqa: E402
from .embedders import Embedder, OpenClipEmbedder, PixelEmbedder  # noqa: E402
from .growth import ConstantGrowthSchedule, FixedGrowthSchedule, GrowthSchedule  # noqa: E402
from .networks import DCGANDiscriminator, DCGANGenerator  # noqa: E402
from .partitioners import Partition, Partitioner, PromptPartitioner, WardPartitioner  # noqa: E402
from .selectors import AutoSelector, FaissSelector, NumbaSelector, Selector, TorchSelector  # noqa: E402
from .trainer import Trainer  # noqa: E402

__all__ = [
    "AutoSelector",
    "ConstantGrowthSchedule",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DiscriminatorBank",
    "Embedder",
    "FaissSelector",
    "FixedGrowthSchedule",
    "GrowthSchedule",
    "OpenClipEmbedder",
    "Partition",
    "Partitioner",
    "NumbaSelector",
    "PixelEmbedder",
    "PromptPartitioner",
    "RoutedDiscriminatorBank",
    "Selector",
    "TorchSelector",
    "Trainer",
    "TrainConfig",
    "WardPartitioner",
    "load_config",
]
