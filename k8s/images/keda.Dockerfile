# KEDA's operator and metrics adapter (static Go binaries from k8s/build-tools.sh) at the paths its
# manifests run them from; nothing else in the image.
FROM scratch
COPY keda /keda
COPY keda-adapter /keda-adapter
USER 65532:65532
ENTRYPOINT ["/keda"]
