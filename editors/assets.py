"""The assets the built-in editors load, registered with the engine's asset registry."""

from engine.assets import Source, make_asset, register_asset

#: Person segmentation for the age editor's hair masks (from the mediapipe 0.10.21 wheel, file only).
SELFIE_SEGMENTATION = register_asset(
    make_asset(
        "selfie_segmentation",
        "selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
        249_505,
        "Apache-2.0 (Google MediaPipe)",
        Source("pypi", "mediapipe==0.10.21", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"),
        description="Person segmentation (256x256), used for hair masks",
    )
).name
