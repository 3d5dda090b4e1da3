{{/*
Rules between values that values.schema.json cannot state with a readable message. Each failure says what is
wrong and what to set instead.
*/}}
{{- define "wingpt.validate" -}}
{{- $v := .Values -}}
{{- $tp := int $v.model.tensorParallel -}}
{{- if and (ne $v.target "gpu-trtllm") (gt $tp 1) -}}
{{- fail (printf "model.tensorParallel=%d needs target gpu-trtllm: only the TensorRT-LLM engine is split across GPUs (target is %s)" $tp $v.target) -}}
{{- end -}}
{{- if and (ne $v.target "cpu") (not $v.model.checkpoint.existingClaim) -}}
{{- fail (printf "target %s needs the model weights: set model.checkpoint.existingClaim to the PersistentVolumeClaim holding %s (only target cpu has an embedded default model)" $v.target $v.model.name) -}}
{{- end -}}
{{- $multi := or (ne $v.autoscaling.mode "none") (gt (int $v.triton.replicas) 1) -}}
{{- if and (eq $v.target "gpu-trtllm") $multi (not $v.engine.cache.existingClaim) (not (has "ReadWriteMany" $v.engine.cache.accessModes)) -}}
{{- fail "engine.cache.accessModes must include ReadWriteMany when more than one Triton replica can run (triton.replicas > 1 or autoscaling): replicas on other nodes cannot mount a ReadWriteOnce engine cache" -}}
{{- end -}}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and (eq $v.autoscaling.mode "hpa") (not $v.autoscaling.hpa.metrics) -}}
{{- fail "autoscaling.mode=hpa needs at least one autoscaling.hpa.metrics entry (e.g. wingpt_waiting_requests)" -}}
{{- end -}}
{{- if and (eq $v.autoscaling.mode "keda") (not $v.autoscaling.keda.triggers) -}}
{{- fail "autoscaling.mode=keda needs at least one autoscaling.keda.triggers entry" -}}
{{- end -}}
{{- if $v.triton.tls.enabled -}}
{{- if not $v.triton.tls.secretName -}}
{{- fail "triton.tls.enabled=true needs triton.tls.secretName: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt for Triton's gRPC port" -}}
{{- end -}}
{{- if and (or $v.ui.enabled $v.tests.enabled) (not $v.triton.tls.clientSecretName) -}}
{{- fail "triton.tls.enabled=true needs triton.tls.clientSecretName: the Secret with ca.crt (and tls.crt/tls.key when mutual) that the UI and the helm test pod use to reach Triton" -}}
{{- end -}}
{{- else if $v.triton.tls.mutual -}}
{{- fail "triton.tls.mutual=true needs triton.tls.enabled=true" -}}
{{- end -}}
{{- if and $v.ingress.enabled (not $v.ui.enabled) -}}
{{- fail "ingress.enabled=true routes to the UI: it needs ui.enabled=true" -}}
{{- end -}}
{{- $derived := list "engine_dir" "tokenizer_dir" "model_dir" -}}
{{- if eq $v.target "gpu-trtllm" -}}
{{- $derived = concat $derived (list "max_batch_size" "context_window") -}}
{{- end -}}
{{- range $k := $derived -}}
{{- if hasKey $v.render.set $k -}}
{{- fail (printf "render.set.%s is set by the chart (from model.checkpoint and, for gpu-trtllm, the engine's engine.build.settings): remove it" $k) -}}
{{- end -}}
{{- end -}}
{{- range $a := $v.triton.extraArgs -}}
{{- if regexMatch "^--(model-control-mode|model-repository|model-store|load-model|grpc-port|http-port|metrics-port)(=|$)" $a -}}
{{- fail (printf "triton.extraArgs may not contain %s: the model repository, model control (none) and ports are fixed by the chart" $a) -}}
{{- end -}}
{{- end -}}
{{- if ge (int $v.triton.preStopSeconds) (int $v.triton.terminationGracePeriodSeconds) -}}
{{- fail (printf "triton.preStopSeconds (%d) must be shorter than triton.terminationGracePeriodSeconds (%d), or in-flight streams get no time to finish" (int $v.triton.preStopSeconds) (int $v.triton.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- end -}}
