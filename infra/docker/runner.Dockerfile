# The GPU runner image: CUDA 11.8 + cuDNN 8 (what libtensorflow 2.9, under tfjs-node-gpu 4.22,
# needs), Node 20 (tfjs-node-gpu's prebuilt binaries stop at Node 20), and the full dependency set.
# `npm ci` downloads libtensorflow for tfjs-node-gpu, so the build needs the network. Where no GPU
# is visible at run time the runner falls back to tfjs-node's CPU build, then wasm (TFJS_BACKEND),
# whose matrix products run on OpenBLAS (libopenblas0-pthread) and whose elementwise kernels are
# compiled on first use with the image's C compiler (g++ brings gcc: runner/moco/kernels/native-kernels.ts).
#   docker build -f infra/docker/runner.Dockerfile --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t momentum-runner .
# (GIT_COMMIT becomes MOMENTUM_GIT_COMMIT: the code version every model version's lineage records.)
FROM nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04

ARG NODE_VERSION=20.19.5
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl xz-utils python3 make g++ libopenblas0-pthread \
 && curl -fsSL "https://nodejs.org/dist/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-x64.tar.xz" \
    | tar -xJ -C /usr/local --strip-components=1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ARG GIT_COMMIT=
ENV MOMENTUM_GIT_COMMIT=${GIT_COMMIT} \
    NODE_ENV=production \
    TFJS_BACKEND=auto \
    DATA_DIR=/var/lib/momentum \
    RUNNER_GRACE_SECONDS=60

COPY package.json package-lock.json ./
# Fail the build, not the first job, when the native GPU binding did not install (no network).
RUN npm ci --no-audit --no-fund \
 && ls node_modules/@tensorflow/tfjs-node-gpu/lib/napi-v*/tfjs_binding.node \
 && npm cache clean --force

COPY tsconfig.json ./
COPY common ./common
COPY contracts ./contracts
COPY db ./db
COPY runner ./runner
COPY scripts ./scripts

RUN mkdir -p /var/lib/momentum && chown node:node /var/lib/momentum 2>/dev/null || true
VOLUME /var/lib/momentum
# node is PID 1: SIGTERM reaches the runner, which checkpoints the running job, hands it back to
# the queue and exits within RUNNER_GRACE_SECONDS. Give the container more than that to stop
# (compose: stop_grace_period; Kubernetes: terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
CMD ["node", "--import", "tsx", "runner/main.ts"]
