{{/* The text of NOTES.txt, in a define so that tests can render it without a cluster. */}}
{{- define "wingpt.notes" -}}
{{- $fullname := include "wingpt.fullname" . -}}
{{- $ns := .Release.Namespace -}}
WiNGPT2 ({{ .Values.model.name }}, target {{ .Values.target }}) is being deployed as release {{ .Release.Name }} in namespace {{ $ns }}.

{{- if eq .Values.target "gpu-trtllm" }}

1. The TensorRT-LLM engine ({{ .Values.model.tensorParallel }} GPU(s) per replica) is cached in
   {{ include "wingpt.engineDir" . }} on the engine cache volume. The first start builds it (up to
   {{ .Values.engine.build.timeoutSeconds }}s); later starts with the same checkpoint and settings reuse it.
{{- if eq .Values.engine.build.mode "job" }}
   Follow the build:    kubectl -n {{ $ns }} logs -f -l app.kubernetes.io/instance={{ .Release.Name }},app.kubernetes.io/component=engine-build
{{- else if eq .Values.engine.build.mode "initContainer" }}
   Follow the build:    kubectl -n {{ $ns }} logs -f deploy/{{ $fullname }}-triton -c engine
{{- else }}
   Mode prebuilt: copy an engine built with the same settings there first (pods fail until it is present).
{{- end }}
{{- else }}

1. No engine build for target {{ .Values.target }}.
{{- end }}

2. Wait until Triton is ready (the startup probe allows {{ .Values.triton.probes.startup.budgetSeconds }}s for loading the model):
   kubectl -n {{ $ns }} rollout status deploy/{{ $fullname }}-triton --timeout={{ add .Values.triton.probes.startup.budgetSeconds 300 }}s

3. Send a real chat through the gRPC Service:
   helm test {{ .Release.Name }} -n {{ $ns }} --logs

4. Endpoints inside the cluster:
   gRPC     {{ include "wingpt.tritonHost" . }}:{{ .Values.service.grpcPort }}{{ if .Values.triton.tls.enabled }} (TLS{{ if .Values.triton.tls.mutual }}, client certificate required{{ end }}){{ end }}
{{- if .Values.service.headless }}
   gRPC, client-side balancing: dns:///{{ $fullname }}-triton-headless.{{ $ns }}.svc:{{ .Values.service.grpcPort }}
{{- end }}
{{- if .Values.triton.http.exposed }}
   HTTP     http://{{ include "wingpt.tritonHost" . }}:{{ .Values.service.httpPort }}/v2/models/ensemble/generate_stream
{{- end }}
   metrics  http://{{ $fullname }}-triton-metrics.{{ $ns }}.svc:{{ .Values.service.metricsPort }}/metrics
{{- if .Values.networkPolicy.enabled }}
   The NetworkPolicy admits gRPC only from this release's UI and test pod{{ if .Values.networkPolicy.grpcClients }} and networkPolicy.grpcClients{{ else }}: add your backends to networkPolicy.grpcClients{{ end }}.
{{- end }}
{{- if .Values.ui.enabled }}

5. The chat UI:
{{- if .Values.ingress.enabled }}
{{- range .Values.ingress.hosts }}
   http{{ if $.Values.ingress.tls }}s{{ end }}://{{ .host }}/
{{- end }}
{{- else }}
   kubectl -n {{ $ns }} port-forward svc/{{ $fullname }}-ui 7860:{{ .Values.ui.service.port }}   # then open http://localhost:7860
{{- end }}
{{- end }}
{{- if eq .Values.autoscaling.mode "hpa" }}

Autoscaling: the HPA scales {{ .Values.autoscaling.minReplicas }}..{{ .Values.autoscaling.maxReplicas }} replicas on {{ range $i, $m := .Values.autoscaling.hpa.metrics }}{{ if $i }}, {{ end }}{{ $m.name }}{{ end }}.
   These custom metrics come from Prometheus Adapter with the rules in helm/wingpt/files/prometheus-adapter-values.yaml. Check:
   kubectl get --raw "/apis/custom.metrics.k8s.io/v1beta1/namespaces/{{ $ns }}/pods/*/{{ (first .Values.autoscaling.hpa.metrics).name }}"
{{- else if eq .Values.autoscaling.mode "keda" }}

Autoscaling: KEDA scales {{ .Values.autoscaling.minReplicas }}..{{ .Values.autoscaling.maxReplicas }} replicas, querying {{ .Values.autoscaling.keda.prometheusAddress }}.
   kubectl -n {{ $ns }} get scaledobject {{ $fullname }}-triton
{{- end }}
{{- if and .Values.triton.tls.enabled .Values.triton.http.exposed }}

Note: TLS protects gRPC only; Triton's HTTP port is plaintext. Set triton.http.exposed=false unless a backend needs it.
{{- end }}
{{- if not .Values.triton.tls.enabled }}

Note: gRPC is not encrypted (triton.tls.enabled=false). Patient conversations cross the network in the clear.
{{- end }}
{{- end -}}
