# cobalt-receiver: a static-ish Rust binary (SQLite is compiled in) on a
# distroless base with glibc, running as a fixed non-root uid.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# A smaller image: no symbols (local release builds keep them for profiling).
ENV CARGO_PROFILE_RELEASE_STRIP=true
# Build the dependencies alone first, so source changes reuse that layer.
# .cargo/config.toml sets how the bundled SQLite is compiled.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
COPY migrations ./migrations
# The placeholder sources are older than the real ones' mtimes may be.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin cobalt-receiver \
 && mkdir -p /data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/cobalt-receiver /usr/local/bin/cobalt-receiver
COPY --from=builder --chown=65532:65532 /data /data
ENV COBALT_RECEIVER_LISTEN=0.0.0.0:8080 \
    COBALT_RECEIVER_DATABASE_URL=sqlite:///data/cobalt-receiver.db
USER 65532:65532
VOLUME ["/data"]
EXPOSE 8080
# The binary probes its own readiness route: the image has no shell or curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/cobalt-receiver", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/cobalt-receiver"]
CMD ["serve"]
