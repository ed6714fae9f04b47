# whitelist-audit as a container: a builder stage compiles it, a minimal runtime stage runs it as a non-root user.
#
#   podman build -t whitelist-audit .          (or docker build)
#   podman run -d -p 10022:10022 -v ./config:/etc/whitelist-audit:ro -v wla-state:/var/lib/whitelist-audit \
#     whitelist-audit serve --config.file /etc/whitelist-audit/whitelist-audit.yml
#
# BUILDER_IMAGE needs cargo, a C compiler and setcap (libcap2-bin is installed when missing); RUNTIME_IMAGE needs
# glibc and libgcc_s, and a user 65532. CI builds this file with images it makes from Debian's own packages
# (packaging/check-container), since no registry is reachable there.
ARG BUILDER_IMAGE=docker.io/library/rust:1-slim-trixie
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian13:nonroot

FROM ${BUILDER_IMAGE} AS builder
RUN command -v setcap >/dev/null || (apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
      && rm -rf /var/lib/apt/lists/*)
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY benches benches
COPY src src
COPY templates templates
COPY profiles profiles
# Raw packets for the path diagnosis as a non-root user: Docker's --cap-add does not reach a non-root
# process's ambient set, a file capability does (it takes effect only when the container has CAP_NET_RAW).
RUN cargo build --release --locked --bin whitelist-audit \
 && install -D -m 0755 target/release/whitelist-audit /out/usr/bin/whitelist-audit \
 && setcap cap_net_raw=ep /out/usr/bin/whitelist-audit
COPY examples /src/examples
COPY rules /out/usr/share/whitelist-audit/rules
COPY dashboards /out/usr/share/whitelist-audit/dashboards
RUN install -d /out/etc/whitelist-audit /out/var/lib/whitelist-audit \
 && sed 's|^  state_dir: \./state .*|  state_dir: /var/lib/whitelist-audit   # a volume: last good lists, SSH host keys seen|' \
      examples/whitelist-audit.yml > /out/etc/whitelist-audit/whitelist-audit.yml \
 && grep -q '^  state_dir: /var/lib/whitelist-audit' /out/etc/whitelist-audit/whitelist-audit.yml \
 && cp examples/whitelist.yml examples/partner-whitelist.yml examples/vendor-sftp-ips.yml /out/etc/whitelist-audit/ \
 && cp profiles/ssh-clients.yaml /out/usr/share/whitelist-audit/ \
 && chown -R 65532:65532 /out/var/lib/whitelist-audit

FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/ /
USER 65532:65532
EXPOSE 10022
VOLUME ["/var/lib/whitelist-audit"]
# No HEALTHCHECK: the runtime image has no shell or HTTP client to run one. Orchestrators probe
# GET /-/healthy (liveness) and /-/ready (readiness: the first sweep finished) on port 10022.
ENTRYPOINT ["/usr/bin/whitelist-audit"]
CMD ["serve", "--config.file", "/etc/whitelist-audit/whitelist-audit.yml"]
