{{/* Pieces shared by the Triton pods and the engine-build Job. */}}

{{/* The engine container: mode build (holds the replica's GPUs), wait or check. Called with (dict "root" $ "mode" m). */}}
{{- define "wingpt.engineContainer" -}}
{{- $root := .root -}}
- name: engine
  image: {{ include "wingpt.tritonImage" $root }}
  imagePullPolicy: {{ $root.Values.images.triton.pullPolicy }}
  command:
    - /bin/sh
    - /scripts/prepare-engine.sh
    - {{ .mode }}
  {{- if eq .mode "build" }}
  args:
    {{- include "wingpt.buildArgs" $root | nindent 4 }}
  {{- end }}
  env:
    - name: ENGINE_DIR
      value: {{ include "wingpt.engineDir" $root }}
    - name: CHECKPOINT_DIR
      value: /checkpoint
    - name: BUILD_INFO
      value: {{ include "wingpt.buildInfo" $root | quote }}
    - name: TIMEOUT_SECONDS
      value: {{ $root.Values.engine.build.timeoutSeconds | quote }}
    - name: HOME
      value: /tmp
    - name: TMPDIR
      value: /scratch
    # The pod has no network (NetworkPolicy): everything comes from the checkpoint volume and the image.
    - name: HF_HOME
      value: /scratch/huggingface
    - name: HF_HUB_OFFLINE
      value: "1"
    - name: HF_DATASETS_OFFLINE
      value: "1"
    - name: PYTHONDONTWRITEBYTECODE
      value: "1"
  resources:
    {{- if eq .mode "build" }}
    {{- include "wingpt.withGpus" (dict "root" $root "resources" $root.Values.engine.build.resources) | nindent 4 }}
    {{- else }}
    requests:
      cpu: 50m
      memory: 64Mi
    limits:
      cpu: 200m
      memory: 128Mi
    {{- end }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: scripts
      mountPath: /scripts
      readOnly: true
    - name: engine-cache
      mountPath: /engine-cache
      readOnly: {{ ne .mode "build" }}
    {{- if eq .mode "build" }}
    - name: checkpoint
      mountPath: /checkpoint
      subPath: {{ $root.Values.model.checkpoint.subPath }}
      readOnly: true
    - name: scratch
      mountPath: /scratch
    - name: tmp
      mountPath: /tmp
    - name: dshm
      mountPath: /dev/shm
    {{- end }}
{{- end -}}

{{/* Volumes for the engine container. Called with (dict "root" $ "mode" m). */}}
{{- define "wingpt.engineVolumes" -}}
{{- $root := .root -}}
- name: scripts
  configMap:
    name: {{ include "wingpt.fullname" $root }}-scripts
    defaultMode: 0555
- name: engine-cache
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-engine-cache" (include "wingpt.fullname" $root)) $root.Values.engine.cache.existingClaim }}
{{- if eq .mode "build" }}
- name: scratch
  emptyDir:
    sizeLimit: {{ $root.Values.engine.build.scratchSize }}
{{- end }}
{{- end -}}

{{- define "wingpt.checkpointVolume" -}}
{{- if .Values.model.checkpoint.existingClaim }}
- name: checkpoint
  persistentVolumeClaim:
    claimName: {{ .Values.model.checkpoint.existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{/* Node placement of pods that hold GPUs: the engine only runs on the GPU product it was built for. */}}
{{- define "wingpt.gpuScheduling" -}}
{{- $nodeSelector := deepCopy .Values.triton.nodeSelector -}}
{{- if .Values.engine.gpuProduct -}}
{{- $_ := set $nodeSelector "nvidia.com/gpu.product" .Values.engine.gpuProduct -}}
{{- end -}}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.triton.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{- define "wingpt.engineJobPodSpec" -}}
restartPolicy: Never
serviceAccountName: {{ include "wingpt.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.images.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- include "wingpt.gpuScheduling" . | trim | nindent 0 }}
containers:
  {{- include "wingpt.engineContainer" (dict "root" . "mode" "build") | nindent 2 }}
volumes:
  {{- include "wingpt.engineVolumes" (dict "root" . "mode" "build") | nindent 2 }}
  {{- include "wingpt.checkpointVolume" . | trim | nindent 2 }}
  - name: tmp
    emptyDir:
      sizeLimit: 8Gi
  - name: dshm
    emptyDir:
      medium: Memory
      sizeLimit: {{ .Values.triton.shmSize }}
{{- end -}}
