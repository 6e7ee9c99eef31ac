"""The hooks a bcauto plugin can implement: each docstring is that hook's reference documentation.

Every ``register_*`` hook receives a ``register`` callback instead of returning a list, so bcauto can check
each entry, record which plugin supplied it, and refuse two components with one name. A plugin is a module with
functions decorated by :data:`bcauto.hookimpl`, listed in the ``bcauto`` entry-point group of its package.
The built-in components are such plugins too (the ``bcauto`` package's own entry points), and bcauto's core
never imports them.

``BCAUTO_DISABLE_PLUGINS`` skips plugins: a comma-separated list of entry-point names (``backbones``),
package names (``bcauto-densenet``) or both (``bcauto-densenet:densenet121``). ``BCAUTO_DISABLE_PLUGINS=bcauto``
switches off every built-in component; ``bcauto plugins`` then lists only what other packages register.

Each spec is checked when it registers (its ``problems()``: a name usable in study files, functions where
functions are due, a known ``preprocessing``, non-empty ``blocks``, severities 1 to 5, ...). A spec that fails
is refused and ``bcauto plugins`` lists it under its package with the reasons; the plugin's other components
still register. What a check at registration cannot see (does ``build`` return the right shapes? do the custom
layers load back from a saved model?) the contract tests in :mod:`bcauto.testing` check by running each
component on tiny generated inputs; a plugin runs them in its own tests::

    import pytest
    from bcauto.testing import check_component, contract_cases

    @pytest.mark.parametrize("kind, spec", contract_cases(package="my-plugin"))
    def test_contract(kind, spec, tmp_path):
        check_component(kind, spec, tmp_path)

Layers a plugin defines itself (in a backbone, an augmentation or a canonicalizer) are saved with the model,
so each class must be registered with ``keras.saving.register_keras_serializable``; otherwise ``refit``,
``evaluate`` and ``predict`` cannot load the model (see ``load_keras_objects``).
"""

import pluggy

hookspec = pluggy.HookspecMarker("bcauto")
hookimpl = pluggy.HookimplMarker("bcauto")


@hookspec
def register_backbones(register):
    """Register feature extractors.

    Call ``register(BackboneSpec(...))`` once per backbone. The spec's ``build(input_shape, weights, **params)``
    returns a Keras model without a classification top that maps images (scaled as ``preprocessing``
    says) to a feature map; ``blocks`` names, in order, the layer that ends each block, so that "unfreeze
    the last k blocks" means the same thing for every backbone.

    ``weights`` is ``"imagenet"`` when the study asks for it (``[train] weights``) and ``pretrained`` lists it,
    the path of a local weights file when the study names one, else None: a backbone whose ``pretrained`` is
    empty is always trained from scratch, whatever the study asks. ``pretrained`` can only list
    ``"imagenet"``, the one weight set a study file can name; other names are refused at registration.
    ``params`` are what ``search_space(trial)`` returned, plus ``norm`` when ``normalizations`` is set and the
    study searches ``[search] normalization``. ``search_space`` suggests under plain names (``"width"``): Optuna
    sees ``BACKBONE.width``, which a study file narrows in a ``[search.BACKBONE]`` table, and MLflow and the
    leaderboard show ``backbone.width``.

    Example::

        @hookimpl
        def register_backbones(register):
            register(BackboneSpec(name="densenet121",
                                  build=keras_application("DenseNet121"),
                                  preprocessing="torch",
                                  # the stem, then each dense block with its transition layer
                                  blocks=("pool1", "pool2_pool", "pool3_pool", "pool4_pool", "relu"),
                                  pretrained=("imagenet",), min_input_size=32))

    (``keras_application`` comes from ``bcauto_builtin.backbones``; the whole plugin is
    ``plugins/bcauto-densenet``.)
    """


@hookspec
def register_augmentations(register):
    """Register augmentation policies.

    Call ``register(AugmentationSpec(...))`` once per policy. ``search_space(trial)`` suggests the policy's
    own hyperparameters through the Optuna trial (use plain names, such as ``"strength"``: Optuna sees
    ``POLICY.strength``, which a study file narrows in a ``[search.POLICY]`` table, and MLflow and the
    leaderboard show ``augmentation.strength``) and returns them as a dict; ``build(params, image_size, seed)``
    returns a Keras layer (or None) that maps a batch of float images in [0, 255] to augmented images in
    [0, 255]. The layer runs inside the model graph and only in training: bcauto does not call it at all when
    the model predicts, so its random state moves only as the model trains. A policy that mixes labels (MixUp,
    CutMix) sets ``mixes_labels=True`` and also provides ``build_batch(params, num_classes, seed)``, a function
    applied to ``(images, one_hot_labels)`` batches in the input pipeline; its ``build`` is still called, and
    the layer it returns (per-image geometry, say; None for nothing) runs in the model as for any policy.
    """


@hookspec
def register_canonicalizers(register):
    """Register input canonicalizers: transforms that give every image one standard look.

    Call ``register(CanonicalizerSpec(...))`` once per canonicalizer. ``build(params, image_size)`` returns a
    Keras layer (or None for no change) that maps float images in [0, 255] to images of the same size in
    [0, 255]: a stain/colour normalization to a reference style, a crop centred on the white cell at a
    canonical scale, and so on. The layer becomes part of the model, in front of the backbone and after the
    augmentation, so it runs identically in search, refit, evaluate and predict and is saved with the model:
    it must be Keras-serializable. ``search_space(trial)`` suggests its own hyperparameters under plain names:
    Optuna sees ``CANONICALIZER.name`` (narrowed in a ``[search.CANONICALIZER]`` table), MLflow and the
    leaderboard ``canonicalization.name``. A study picks among them with ``[search] canonicalization``.
    """


@hookspec
def register_imbalance_strategies(register):
    """Register class-imbalance strategies.

    Call ``register(ImbalanceSpec(...))`` once per strategy. ``apply(labels, seed)`` receives the training
    labels and returns an ``ImbalancePlan``: the indices of the training examples to use (resampled or
    not; every class kept) and optional per-class loss weights, the same plan for the same labels and seed.
    """


@hookspec
def register_datasets(register):
    """Register data sources.

    Call ``register(DatasetSpec(...))`` once per source. ``load(arg, image_size, options)`` returns a
    :class:`bcauto.data.Dataset` (uint8 images N x H x W x 3 at ``image_size``, integer labels, class
    names). ``arg`` is the part after ``name:`` in ``--data name:arg`` (or the path, for path-based
    sources). ``claims(spec)`` may return True for a ``--data`` string the source recognises by itself,
    such as a path with a given extension. ``available(image_size, options)`` (optional) returns the argument
    to load with when the source's data can be had now, else None; ``--data auto`` asks it.
    """


@hookspec
def register_shifts(register):
    """Register distribution shifts (image corruptions) for robustness scoring.

    Call ``register(ShiftSpec(...))`` once per corruption. ``apply(images, severity, rng)`` receives a uint8
    batch N x H x W x 3 and a NumPy random generator and returns a corrupted uint8 batch of the same shape,
    drawing randomness only from ``rng`` so that one seed gives one result; ``severities`` lists the levels it
    supports, integers from 1 (mild) to 5. ``group`` is ``"corruption"`` (damage within one lab) or ``"lab"``
    (what differs between labs).
    """


@hookspec
def load_keras_objects():
    """Import the modules that define your Keras-serializable classes (custom layers), before a model is loaded.

    bcauto calls it before it loads a saved model (``refit``'s ensembles, ``evaluate``, ``predict``, ``adapt``),
    so that ``keras.saving`` finds every class registered with ``keras.saving.register_keras_serializable``.
    Implement it when those classes live in a module your plugin imports only when it builds a model (keeping
    TensorFlow out of commands such as ``bcauto plugins``); classes defined in the plugin module itself need
    nothing, since loading the plugins imports it. Example::

        @hookimpl
        def load_keras_objects():
            from my_plugin import layers  # noqa: F401  (registers MyLayer)
    """
