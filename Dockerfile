# ObeyForum: one image for every service (`node dist/src/main.js [auth|content|alerts|mailing ...]`).

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# patch-package applies them after the install (package.json's postinstall).
COPY patches ./patches
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY schemas ./schemas
RUN npm run build && npm prune --omit=dev

FROM node:20-slim
ENV NODE_ENV=production
# Memory: each service keeps within 200 MB (bench:system, which runs the services with these same
# options, read from this line). A smaller young generation and old-space limit make V8 collect
# before it grows the heap into memory it does not need; two background threads suffice for GC.
ENV NODE_OPTIONS="--max-old-space-size=128 --max-semi-space-size=8 --v8-pool-size=2"
# Argon2id takes 19 MiB per hash on a libuv thread: two at once bound auth's memory (four by default).
ENV UV_THREADPOOL_SIZE=2
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/schemas ./schemas
USER node
EXPOSE 3000
CMD ["node", "dist/src/main.js"]
