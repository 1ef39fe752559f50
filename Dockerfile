# The container route of cluster.yaml (its commented `docker:` section): a new node pulls this
# image (a few minutes, layers cached per node) instead of installing ~5.7 GB of wheels.
#
#   docker build -t MY_REGISTRY/ray-reid:latest .          # from the repository root
#   docker push MY_REGISTRY/ray-reid:latest                  # e.g. an ECR repository
#
# Built on Ray's official GPU image for the Ray version and Python the code pins (pyproject.toml:
# ray==2.60.0, Python >= 3.11; tests/test_cluster_yaml.py checks they agree). torch, CuPy and
# faiss bring their own CUDA libraries as wheels, so the image's CUDA only has to be new enough
# for the node's driver, which the Deep Learning AMI in cluster.yaml provides.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu
FROM ${RAY_IMAGE}

# The same layout cluster.yaml's setup_commands make on a bare AMI: uv in ~/.local/bin, a Python
# 3.11 venv at ~/venv first on PATH, the package installed editable from ~/ray-reid. Those
# commands still run in the container on every `ray up`; here they find everything in place and
# finish in seconds, and file_mounts' copy of your checkout replaces ~/ray-reid, so a code change
# needs no rebuild (a dependency change does).
USER ray
WORKDIR /home/ray
RUN python -m pip install --no-cache-dir --user uv \
    && ~/.local/bin/uv venv --python 3.11 ~/venv \
    && ~/.local/bin/uv pip install --no-cache --python ~/venv/bin/python "ray[default,train,tune]==2.60.0"

# Dependencies first, from pyproject.toml alone, so editing the code does not rebuild this layer.
COPY --chown=ray:users pyproject.toml README.md /home/ray/ray-reid/
RUN mkdir -p ~/ray-reid/ray_reid && touch ~/ray-reid/ray_reid/__init__.py \
    && ~/.local/bin/uv pip install --no-cache --python ~/venv/bin/python -e ~/ray-reid
COPY --chown=ray:users ray_reid /home/ray/ray-reid/ray_reid
COPY --chown=ray:users jobs /home/ray/ray-reid/jobs

RUN echo 'export PATH="$HOME/venv/bin:$PATH"  # ray-reid venv' >> ~/.bashrc
ENV PATH=/home/ray/venv/bin:${PATH}
# Fails the build, not the first job, when the install is broken.
RUN python -c "import ray, ray_reid.run; assert ray.__version__ == '2.60.0', ray.__version__"
