# The router's image: a statically linked binary and the default scripts, nothing else.
#
# Built without any base image (Docker Hub is not needed), from a binary built on the host:
#
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --target x86_64-unknown-linux-gnu --bin switchyard
#   mkdir -p dist && cp target/x86_64-unknown-linux-gnu/release/switchyard dist/
#   cp /etc/ssl/certs/ca-certificates.crt dist/
#   docker build -t switchyard:latest .
#
# .dockerignore keeps the build context to dist/, scripts/ and stdlib/. The stdlib is also
# embedded in the binary; the copy under /usr/share/switchyard is for reading. Run with the Docker
# socket mounted (`-v /var/run/docker.sock:/var/run/docker.sock:ro`, `--docker` or `--swarm`) or
# with a TCP endpoint (`--swarm.endpoint tcp://manager:2375`, or https:// with --swarm.tls-*).
FROM scratch
COPY dist/switchyard /usr/local/bin/switchyard
# The build machine's root certificates: Let's Encrypt's API and https:// servers are checked
# against them.
COPY dist/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY scripts /scripts
COPY stdlib /usr/share/switchyard/stdlib
WORKDIR /
ENV SWITCHYARD_SCRIPTS=/scripts
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run"]
