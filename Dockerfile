# event-collector image: build the release binary, ship it on a small
# non-root base (distroless cc: glibc, libgcc, CA certificates). OpenSSL and
# zlib (librdkafka's) are built into the binary: their updates come with
# `cargo update -p openssl-src -p libz-sys` and a rebuild.
#   docker build -t event-collector:0.1.0 .
#   docker run --rm -v ~/.kube:/home/nonroot/.kube:ro event-collector:0.1.0
# In a cluster, manifest/ mounts the config at /etc/event-collector/config and
# a data volume at /var/lib/event-collector (docs/operations.md).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY runtime runtime
COPY exporters exporters
COPY tests tests
COPY guest-sdk/wit guest-sdk/wit
RUN cargo build --release --locked -p event-collector --bin event-collector \
 && strip target/release/event-collector \
 && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/event-collector /usr/local/bin/event-collector
COPY event-collector.toml /etc/event-collector/config.toml
# The working directory is the data directory: the default config writes
# ./events there. Owned by the non-root user; mount a volume on it.
COPY --from=build --chown=65532:65532 /out/data /var/lib/event-collector
WORKDIR /var/lib/event-collector
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/event-collector"]
CMD ["--config", "/etc/event-collector/config.toml"]
