# syntax=docker/dockerfile:1
# Static binary (CGO off: SQLite is pure Go) on a distroless, non-root base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/qase-sync ./cmd/qase-sync \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/qase-sync /usr/local/bin/qase-sync
COPY config.example.yaml /etc/qase-sync/config.yaml
# The SQLite file lives here; mount a volume to keep it.
COPY --from=build --chown=nonroot:nonroot /out/data /var/lib/qase-sync
WORKDIR /var/lib/qase-sync
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/qase-sync"]
CMD ["serve", "-c", "/etc/qase-sync/config.yaml"]
