# event-collector image: build the release binary, ship it on a small
# non-root base with CA certificates.
#   docker build -t event-collector:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY runtime runtime
COPY exporters exporters
COPY tests tests
COPY guest-sdk/wit guest-sdk/wit
RUN cargo build --release --locked -p event-collector --bin event-collector \
 && strip target/release/event-collector

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/event-collector /usr/local/bin/event-collector
COPY event-collector.toml /etc/event-collector/config.toml
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/event-collector"]
CMD ["--config", "/etc/event-collector/config.toml"]
