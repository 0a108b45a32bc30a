# Source this on a lent GPU machine: installs the wheels carried in .whl/ (diffusers alone when the machine's
# Hugging Face libraries suit it, else the whole carried set) and puts the project on the path.
site=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
  .whl/diffusers-*.whl .whl/importlib_metadata-*.whl
export PYTHONPATH="$site:$PWD:$PWD/server" PYTHONUNBUFFERED=1
if ! python3 -c "import diffusers, transformers; from diffusers import AutoencoderKLWan, WanTransformer3DModel" 2>/dev/null; then
  echo "the machine's Hugging Face libraries do not suit diffusers 0.42: installing the carried set"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
fi
if ! python3 -c "import cv2" 2>/dev/null; then  # the clean plate's OpenCV, when the machine has none: carry its wheel
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    .whl/opencv_python_headless-*.whl
fi
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, \
'transformers', transformers.__version__, torch.cuda.get_device_name())"
