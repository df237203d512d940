# The API image: Hono + Postgres + Redis + S3 clients, no ML dependencies (the API never imports
# TensorFlow.js; DESIGN.md section 1). Build from the repository root:
#   docker build -f infra/docker/api.Dockerfile -t momentum-api .
FROM node:20-bookworm-slim

WORKDIR /app
ENV NODE_ENV=production \
    API_HOST=0.0.0.0 \
    API_PORT=8787

COPY package.json package-lock.json ./
# --omit=optional skips tfjs-node(-gpu), whose install downloads libtensorflow. The pure-JS tfjs
# packages are regular dependencies of the monorepo; the API does not load them, so they are
# removed to keep the image small. tsx (a runtime dependency) runs the TypeScript sources.
RUN npm ci --omit=optional --no-audit --no-fund \
 && rm -rf node_modules/@tensorflow \
 && npm cache clean --force

COPY tsconfig.json ./
COPY common ./common
COPY contracts ./contracts
COPY db ./db
COPY api ./api
COPY dashboard ./dashboard
COPY scripts ./scripts

USER node
EXPOSE 8787
# node is PID 1 and handles SIGTERM itself (drains connections, stops the dispatcher).
CMD ["node", "--import", "tsx", "api/server.ts"]
