{{/* Chart name, truncated to 63 characters. */}}
{{- define "mlops-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "mlops-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "mlops-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "mlops-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mlops-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlops-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mlops-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mlops-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlops-operator
{{- end }}

{{- define "mlops-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlops-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlops-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "mlops-operator.runtimeImage" -}}
{{- printf "%s:%s" .Values.runtimeImage.repository (default .Chart.AppVersion .Values.runtimeImage.tag) -}}
{{- end }}

{{- define "mlops-operator.mlflowName" -}}
{{- printf "%s-mlflow" (include "mlops-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The MLflow URI the operator defaults to: the value, else the bundled server, else none. */}}
{{- define "mlops-operator.trackingUri" -}}
{{- if .Values.mlflow.trackingUri -}}
{{- .Values.mlflow.trackingUri -}}
{{- else if .Values.mlflow.server.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "mlops-operator.mlflowName" .) .Release.Namespace (int .Values.mlflow.server.port) -}}
{{- end -}}
{{- end }}

{{/* Peering is on when more than one replica runs. */}}
{{- define "mlops-operator.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end -}}
{{- end }}

{{/* Argo CD sync-wave annotation (CRDs in crds/ are applied by Argo CD before everything else). */}}
{{- define "mlops-operator.syncWave" -}}
{{- if .root.Values.argocd.syncWaves -}}
argocd.argoproj.io/sync-wave: {{ .wave | quote }}
{{- end }}
{{- end }}

{{/* The RBAC rules on namespaced resources, shared by the ClusterRole and the per-namespace Roles.
     Derived from operator/mlops_operator/controllers (see docs/install.md, "RBAC"). */}}
{{- define "mlops-operator.namespacedRules" -}}
# The three kinds: kopf watches them (list, watch) and patches finalizers/annotations (patch); the
# controllers read them (get); a DriftPolicy creates retraining TrainingJobs (create).
- apiGroups: [mlops.dev]
  resources: [trainingjobs]
  verbs: [get, list, watch, patch, create]
- apiGroups: [mlops.dev]
  resources: [modeldeployments, driftpolicies]
  verbs: [get, list, watch, patch]
# Status is written only through the status subresource (merge patch).
- apiGroups: [mlops.dev]
  resources: [trainingjobs/status, modeldeployments/status, driftpolicies/status]
  verbs: [patch]
# Children are written with server-side apply: a PATCH that the apiserver authorizes as "patch", and also
# as "create" when the object does not exist yet.
# TrainingJob children: the Job (applied; read back with get; kopf watches it).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
# Training/serving pods are only listed, never watched (the Job's status says when to look): the
# TrainingJob controller lists a Job's pods, the DriftPolicy controller lists serving pods to scrape them.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Services of TrainingJobs (DDP rendezvous) and ModelDeployments: applied, listed and pruned.
- apiGroups: [""]
  resources: [services]
  verbs: [list, create, patch, delete]
# ModelDeployment children: Deployments (applied, read, watched by kopf, pruned) and HPAs (applied, pruned).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, create, patch, delete]
# Optional ModelDeployment children, used only when their CRDs are installed and a spec opts in: a Gateway
# API HTTPRoute (spec.gateway: exact canary weights) and a KEDA ScaledObject (autoscaling.scaleToZero):
# applied, listed and pruned. Whether the CRDs exist is read from API discovery (allowed to everyone).
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [list, create, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [list, create, patch, delete]
# Events: posted by the controllers and kopf (create); FailedScheduling events read for TrainingJob failures (list).
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
{{- end }}
