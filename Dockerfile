# Gemma Studio on an official PyTorch CUDA runtime image.
#
#   docker build -t gemma-studio .
#   docker run --gpus all -it -v "$PWD/runs:/runs" gemma-studio
#
# The studio (gemma-tui launch) starts by default and writes its run to the
# mounted /runs/output. Any gemma-core command works too, for example:
#   docker run --gpus all -v "$PWD/runs:/runs" gemma-studio gemma-core train --preset seed-270m ...
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GEMMA_STUDIO_CACHE=/runs/.cache/tokens

WORKDIR /opt/gemma-studio
COPY pyproject.toml README.md ./
COPY gemma_core ./gemma_core
COPY gemma_tui ./gemma_tui
# torch comes from the base image; pip keeps it because it satisfies torch>=2.9.
RUN pip install --no-cache-dir .

WORKDIR /runs
VOLUME ["/runs"]
CMD ["gemma-tui", "launch", "--output_dir", "/runs/output"]
