# helm/: the Kubernetes chart. scripts/install_helm.sh puts the real helm (and checkov) into .tools/ once.
#   make helm-lint       helm lint --strict, every value profile
#   make helm-template   render every profile into build/helm/<profile>.yaml (what `helm install` would apply)
#   make helm-test       the chart tests (lint, Kubernetes schemas, checkov, rendered pieces, engine cache script)
HELM := .tools/bin/helm
HELM_CHART := helm/wingpt
HELM_PROFILES := values-7b-int4 values-14b-tp2 values-cpu-dev
HELM_OUT := build/helm

.PHONY: helm-tools helm-lint helm-template helm-test

helm-tools:
	@bash scripts/install_helm.sh

helm-lint: helm-tools
	@for p in $(HELM_PROFILES); do \
		$(HELM) lint --strict $(HELM_CHART) -f $(HELM_CHART)/$$p.yaml || exit 1; \
	done

helm-template: helm-tools
	@mkdir -p $(HELM_OUT)
	@for p in $(HELM_PROFILES); do \
		$(HELM) template wingpt $(HELM_CHART) -f $(HELM_CHART)/$$p.yaml >$(HELM_OUT)/$$p.yaml || exit 1; \
		echo "$(HELM_OUT)/$$p.yaml"; \
	done

helm-test: setup helm-tools
	$(PY) -m pytest -q tests/test_helm_*.py
