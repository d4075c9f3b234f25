# voxrelay container image: build with cargo-chef so dependencies are compiled in
# their own cached layer, then copy the single binary into a slim Debian runtime
# that runs as an unprivileged user.
#
#   docker build -t voxrelay .
#   docker run --rm -p 8080:8080 voxrelay                # offline scripted agent
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY=sk-... voxrelay
#
# The toolchain is pinned to the one the project is tested with, and the one that
# made scripts/hot-code.order, the code layout that keeps about 5 MiB of the binary
# unmapped at idle (README, Development). Another --build-arg RUST_VERSION=1.xx
# builds too, with a warning that the layout's names do not match. Builder and
# runtime are both bookworm (glibc 2.36), so the build also packs the binary's
# relocations (scripts/build.rs); keep the two stages on one Debian release.
ARG RUST_VERSION=1.95

# --- chef: the Rust toolchain plus cargo-chef ------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
# aws-lc-sys (the TLS crypto of rustls) compiles C: it needs a C compiler, and uses
# CMake when its plain cc build is not available for the target.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# --- planner: a recipe of the dependency graph (changes only with Cargo.*) -------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- builder: dependencies first (cached), then our code --------------------------
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin voxrelay \
    && strip target/release/voxrelay

# --- runtime: the binary, CA certificates, a non-root user ------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 voxrelay \
    && useradd --system --uid 10001 --gid voxrelay --home-dir /app --shell /usr/sbin/nologin voxrelay \
    && mkdir -p /app/logs /app/data \
    && chown -R voxrelay:voxrelay /app
COPY --from=builder /src/target/release/voxrelay /usr/local/bin/voxrelay
WORKDIR /app
USER voxrelay:voxrelay
# PORT is honoured at run time (Railway sets it). LOG_DIR and the default SQLite
# database (DATABASE_URL=sqlite://data/voxrelay.db, i.e. /app/data) must be writable.
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_DIR=/app/logs \
    RUST_LOG=info
EXPOSE 8080
# Exec form: voxrelay is PID 1 and receives SIGTERM itself, so it drains live calls.
ENTRYPOINT ["/usr/local/bin/voxrelay"]
CMD ["serve"]
