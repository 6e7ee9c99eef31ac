"""DenseNet121 as a bcauto backbone: an example of a third-party plugin package."""

from bcauto import hookimpl
from bcauto.specs import BackboneSpec
from bcauto_builtin.backbones import keras_application

DENSENET121 = BackboneSpec(
    name="densenet121",
    # the built-in helper: same include_top=False call and same offline-weights error as the built-ins; the
    # constructor by name, so Keras is imported only when a model is built (not by `bcauto plugins`)
    build=keras_application("DenseNet121"),
    preprocessing="torch",  # keras.applications.densenet.preprocess_input uses the torch mode
    # the stem ends at pool1; each dense block ends with its transition (poolN_pool); the last one at "relu"
    blocks=("pool1", "pool2_pool", "pool3_pool", "pool4_pool", "relu"),
    pretrained=("imagenet",),
    min_input_size=32,
    default_input_size=224,
    description="DenseNet121 (bcauto-densenet), stem + 4 dense blocks",
)


@hookimpl
def register_backbones(register):
    """Register ``densenet121``."""
    register(DENSENET121)
