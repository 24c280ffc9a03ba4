# The Berth image: `berth` and `berth-operator`, running as the non-root user 65532.
# Built by scripts/image.sh, which assembles rootfs/ (binaries, the libraries they link, CA
# certificates, /etc/passwd) — this file only puts it into an empty image.
FROM scratch
COPY rootfs/ /
# COPY makes everything root's; the data directory (created by this COPY) belongs to the user
# berth runs as.
COPY --chown=65532:65532 data/ /var/lib/berth/
ENV PATH=/usr/local/bin
USER 65532:65532
WORKDIR /var/lib/berth
EXPOSE 5000
ENTRYPOINT ["berth"]
CMD ["serve", "--listen", "0.0.0.0:5000", "--data-dir", "/var/lib/berth"]
