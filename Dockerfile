# Multi-stage build: compile in the Rust image, run as a non-root user in a
# slim Debian image. reqwest uses rustls, so no OpenSSL is needed at runtime;
# ca-certificates is kept for any tool that wants the system store.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferry-cli --bin ferry \
    && cp target/release/ferry /ferry

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ferry \
    && mkdir -p /var/lib/ferry/spool && chown -R ferry:ferry /var/lib/ferry \
    && printf '#!/bin/sh\nexec curl -fsS http://127.0.0.1:5000/healthz >/dev/null\n' > /usr/local/bin/ferry-healthcheck \
    && chmod 0755 /usr/local/bin/ferry-healthcheck
COPY --from=build /ferry /usr/local/bin/ferry
USER ferry
ENV LOG_FORMAT=json
# Where the api keeps pushes Redis could not take in time (fsynced, replayed
# when Redis is back): writable by the runtime user, a volume in compose.
ENV FERRY_SPOOL_DIR=/var/lib/ferry/spool
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/ferry"]
CMD ["api"]
