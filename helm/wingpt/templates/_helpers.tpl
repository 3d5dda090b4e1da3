{{/*
Names. The full name is cut to 42 characters so that the longest suffix ("-triton-headless", "-engine-<10 hex>")
still fits the 63-character limit of Service and Job names.
*/}}
{{- define "wingpt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 42 | trimSuffix "-" -}}
{{- end -}}

{{- define "wingpt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "wingpt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "wingpt.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels. Called with (dict "root" $ "component" "triton"). */}}
{{- define "wingpt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wingpt.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "wingpt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "wingpt.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: wingpt
{{- end -}}

{{/*
Image references. A digest pins the exact image (repository:tag@digest stays readable).
Called with (dict "image" .Values.images.x "tag" <default tag>).
*/}}
{{- define "wingpt.imageRef" -}}
{{- $tag := default .tag .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "wingpt.tritonImage" -}}
{{- include "wingpt.imageRef" (dict "image" .Values.images.triton "tag" (printf "%s-%s" .Values.tritonRelease .Chart.AppVersion)) -}}
{{- end -}}

{{- define "wingpt.appImage" -}}
{{- include "wingpt.imageRef" (dict "image" .Values.images.app "tag" .Chart.AppVersion) -}}
{{- end -}}

{{/* The image Triton runs in: the TensorRT-LLM container for the GPU targets, the slim app image on CPU. */}}
{{- define "wingpt.servingImage" -}}
{{- if eq .Values.target "cpu" -}}{{ include "wingpt.appImage" . }}{{- else -}}{{ include "wingpt.tritonImage" . }}{{- end -}}
{{- end -}}

{{- define "wingpt.servingImagePullPolicy" -}}
{{- if eq .Values.target "cpu" -}}{{ .Values.images.app.pullPolicy }}{{- else -}}{{ .Values.images.triton.pullPolicy }}{{- end -}}
{{- end -}}

{{/*
What the engine bytes depend on, and nothing else, so that replicas, restarts and upgrades that keep these reuse
the engine and any change builds a new one beside the old. toJson sorts map keys: the order of the settings in
values does not matter.
*/}}
{{- define "wingpt.engineInputs" -}}
{{- toJson (dict
  "model" .Values.model.name
  "revision" (toString .Values.model.revision)
  "checkpoint" .Values.model.checkpoint.subPath
  "tensorParallel" .Values.model.tensorParallel
  "settings" .Values.engine.build.settings
  "tritonRelease" .Values.tritonRelease
  "gpuProduct" .Values.engine.gpuProduct) -}}
{{- end -}}

{{- define "wingpt.engineKey" -}}
{{- include "wingpt.engineInputs" . | sha256sum | trunc 16 -}}
{{- end -}}

{{- define "wingpt.engineDir" -}}
{{- printf "/engine-cache/%s-%s" (.Values.model.name | lower | regexReplaceAll "[^a-z0-9.]+" "-") (include "wingpt.engineKey" .) -}}
{{- end -}}

{{/* Recorded as build-info.json beside the engine: what it was built from, for people reading the cache. */}}
{{- define "wingpt.buildInfo" -}}
{{- toJson (set (include "wingpt.engineInputs" . | fromJson) "key" (include "wingpt.engineKey" .)) -}}
{{- end -}}

{{/*
`python -m build_engine` flags after --model-dir/--output-root (added by prepare-engine.sh), as YAML list items.
Its own model repository goes to scratch: the pods render theirs from this release's values.
*/}}
{{- define "wingpt.buildArgs" -}}
- --tp
- {{ .Values.model.tensorParallel | quote }}
- --repo-out
- /scratch/build-engine-repository
{{- $s := .Values.engine.build.settings }}
{{- range $k := keys $s | sortAlpha }}
- {{ printf "--%s" ($k | replace "_" "-") }}
- {{ get $s $k | toString | quote }}
{{- end }}
{{- end -}}

{{/* `python -m serving render` arguments after --target/--out, as YAML list items. */}}
{{- define "wingpt.renderArgs" -}}
{{- if .Values.model.checkpoint.existingClaim }}
- --model-dir
- /checkpoint
{{- end }}
{{- if eq .Values.target "gpu-trtllm" }}
{{- $s := .Values.engine.build.settings }}
- --set
- engine_dir={{ include "wingpt.engineDir" . }}/engine
- --set
- {{ printf "max_batch_size=%v" $s.max_batch_size | quote }}
- --set
- {{ printf "context_window=%v" $s.max_seq_len | quote }}
- --set
- {{ printf "max_tokens_limit=%d" (div (int $s.max_seq_len) 2) | quote }}
{{- end }}
{{- range $k := keys .Values.render.set | sortAlpha }}
- --set
- {{ printf "%s=%v" $k (get $.Values.render.set $k) | quote }}
{{- end }}
{{- end -}}

{{/* GPU resources of a container that holds the replica's GPUs (Triton, the builder). */}}
{{- define "wingpt.withGpus" -}}
{{- $res := deepCopy .resources -}}
{{- $gpus := dict "nvidia.com/gpu" (toString .root.Values.model.tensorParallel) -}}
{{- $_ := set $res "limits" (mergeOverwrite (default (dict) $res.limits) $gpus) -}}
{{- $_ := set $res "requests" (mergeOverwrite (default (dict) $res.requests) $gpus) -}}
{{- toYaml $res -}}
{{- end -}}

{{- define "wingpt.tritonHost" -}}
{{- printf "%s-triton.%s.svc" (include "wingpt.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* Client flags for TLS to Triton's gRPC port (UI, helm test). */}}
{{- define "wingpt.clientTlsArgs" -}}
{{- $tls := .Values.triton.tls -}}
{{- if $tls.enabled }}
- {{ $tls.clientFlags.ssl }}
- {{ printf "%s=/etc/wingpt/tls/ca.crt" $tls.clientFlags.rootCertificates }}
{{- if $tls.mutual }}
- {{ printf "%s=/etc/wingpt/tls/tls.key" $tls.clientFlags.privateKey }}
- {{ printf "%s=/etc/wingpt/tls/tls.crt" $tls.clientFlags.certificateChain }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "wingpt.clientTlsVolume" -}}
{{- if .Values.triton.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.triton.tls.clientSecretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "wingpt.clientTlsMount" -}}
{{- if .Values.triton.tls.enabled }}
- name: tls
  mountPath: /etc/wingpt/tls
  readOnly: true
{{- end }}
{{- end -}}

{{/* Label selector of this release's Triton pods in PromQL (Prometheus Operator adds namespace and service). */}}
{{- define "wingpt.promSelector" -}}
{{- printf "namespace=%q,service=%q" .Release.Namespace (printf "%s-triton-metrics" (include "wingpt.fullname" .)) -}}
{{- end -}}

{{/*
checkov skips that depend on values, as metadata annotations. Justifications:
  CKV_K8S_43 (image digest) is only skipped while no digest is configured: tags carry the Triton release and
  the chart version; production should set images.*.digest.
  CKV_K8S_15 (pull policy Always) is only skipped while the policy is not Always: images are pinned by tag or
  digest, so IfNotPresent only spares a registry round trip on every pod start (and a registry outage stopping
  GPU pods from restarting).
Called with (dict "image" .Values.images.x "n" <first skip index>).
*/}}
{{- define "wingpt.imageSkips" -}}
{{- $n := .n -}}
{{- if not .image.digest }}
checkov.io/skip{{ $n }}: CKV_K8S_43=Images are pinned by release tag; set images.*.digest to pin by digest
{{- $n = add1 $n }}
{{- end }}
{{- if ne .image.pullPolicy "Always" }}
checkov.io/skip{{ $n }}: CKV_K8S_15=Images are pinned; IfNotPresent spares a registry round trip per pod start
{{- end }}
{{- end -}}
