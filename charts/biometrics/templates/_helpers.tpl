{{/*
Names and labels of the operator's objects.
*/}}
{{- define "biometrics.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "biometrics.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "biometrics.selectorLabels" -}}
app.kubernetes.io/name: {{ include "biometrics.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "biometrics.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "biometrics.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "biometrics.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "biometrics.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "biometrics.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Where the operator's configuration file is mounted.
*/}}
{{- define "biometrics.configDir" -}}/etc/biometrics/config{{- end }}

{{/*
Where the operator reads the CAs of agent certificates.
*/}}
{{- define "biometrics.agentCaDir" -}}/etc/biometrics/agent-ca{{- end }}

{{/*
The rules the operator needs where it reconciles: every namespace (a ClusterRole) or
watchNamespace (a Role). Exactly what it calls; operator/tests/rbac.rs checks both ways.
*/}}
{{- define "biometrics.reconcileRules" -}}
# The controllers watch their resources, add and remove finalizers (JSON patch) …
- apiGroups: [biometrics.io]
  resources: [profilecaptures, cachepolicies]
  verbs: [list, watch, patch]
# … and write status by server-side apply.
- apiGroups: [biometrics.io]
  resources: [profilecaptures/status, cachepolicies/status]
  verbs: [patch]
# The capture browser reads the capture it shows by name.
- apiGroups: [biometrics.io]
  resources: [profilecaptures]
  verbs: [get]
# Target pods, and the workloads named by onRolloutOf.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [apps]
  resources: [deployments, statefulsets, replicasets]
  verbs: [list, watch]
# A CachePolicy's passwordSecretRef, read by name when work is sent: never listed or watched.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# The public key for the agents, applied server-side in each namespace with a capture or a
# policy; an apply that creates the ConfigMap is also checked for create, by name. Listed and
# watched by that name only (a field selector on metadata.name), to publish it again when it
# is deleted or edited.
- apiGroups: [""]
  resources: [configmaps]
  resourceNames: [biometrics-trust]
  verbs: [create, patch, list, watch]
# kube-runtime's event recorder creates an Event, then patches its series on repeats.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# The role holding these rules owns the trust ConfigMaps: its uid, read by name at start.
- apiGroups: [rbac.authorization.k8s.io]
  {{- if .Values.watchNamespace }}
  resources: [roles]
  resourceNames: [{{ printf "%s-reconcile" (include "biometrics.fullname" .) | quote }}]
  {{- else }}
  resources: [clusterroles]
  resourceNames: [{{ include "biometrics.fullname" . | quote }}]
  {{- end }}
  verbs: [get]
{{- end }}

{{/*
The role that owns the trust ConfigMaps, as the operator's --trust-owner: the one holding
the reconcile rules, which is in the ConfigMaps' namespace or cluster-wide.
*/}}
{{- define "biometrics.trustOwner" -}}
{{- if .Values.watchNamespace -}}
Role/{{ include "biometrics.fullname" . }}-reconcile
{{- else -}}
ClusterRole/{{ include "biometrics.fullname" . }}
{{- end -}}
{{- end }}

{{/*
The agent sidecar, for an app's pod template. The argument is a dict:
  Values        this chart's values (in a chart that depends on this one:
                .Values.biometrics); agent.* and profiles.* are read
  appContainer  the app container's name (default: Values.agent.appContainer)
  targetPort    the app's pprof port (default: Values.agent.targetPort)
  native        true to render it for the pod's initContainers: as a native sidecar
                (restartPolicy: Always, Kubernetes 1.29 and later): it starts before
                the app, stops after it, and lets a Job's pod complete
The operator only instructs pods with a container named exactly biometrics-agent.
*/}}
{{- define "biometrics.agentSidecar" -}}
{{- $agent := .Values.agent }}
{{- $tls := $agent.tls -}}
- name: biometrics-agent
  image: {{ printf "%s:%s" $agent.image.repository (required "agent.image.tag is required" $agent.image.tag) | quote }}
  imagePullPolicy: {{ $agent.image.pullPolicy }}
  {{- if .native }}
  restartPolicy: Always
  {{- end }}
  {{- with $agent.extraArgs }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    - name: BIOMETRICS_MEMORY_LIMIT
      valueFrom:
        resourceFieldRef:
          containerName: {{ .appContainer | default $agent.appContainer }}
          resource: limits.memory
    - name: BIOMETRICS_AGENT_LISTEN
      value: {{ printf "[::]:%v" $agent.port | quote }}
    - name: BIOMETRICS_HEALTH_LISTEN
      value: {{ printf "[::]:%v" $agent.healthPort | quote }}
    - name: BIOMETRICS_TARGET_PORT
      value: {{ .targetPort | default $agent.targetPort | quote }}
    - name: BIOMETRICS_TARGET_BASE_PATH
      value: {{ $agent.targetBasePath | quote }}
    - name: BIOMETRICS_PROFILES_DIR
      value: /profiles
    - name: BIOMETRICS_OPERATOR_PUBLIC_KEY
      value: /etc/biometrics/trust/operator.pub
    {{- if $tls.enabled }}
    - name: BIOMETRICS_TLS_CERT
      value: /etc/biometrics/tls/tls.crt
    - name: BIOMETRICS_TLS_KEY
      value: /etc/biometrics/tls/tls.key
    {{- end }}
    {{- with $agent.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: biometrics
      containerPort: {{ $agent.port }}
      protocol: TCP
    - name: bio-health
      containerPort: {{ $agent.healthPort }}
      protocol: TCP
  readinessProbe:
    httpGet:
      path: /readyz
      port: bio-health
    periodSeconds: 10
  livenessProbe:
    httpGet:
      path: /healthz
      port: bio-health
    periodSeconds: 20
    failureThreshold: 3
  volumeMounts:
    - name: biometrics-profiles
      mountPath: /profiles
    - name: biometrics-trust
      mountPath: /etc/biometrics/trust
      readOnly: true
    {{- if $tls.enabled }}
    - name: biometrics-agent-tls
      mountPath: /etc/biometrics/tls
      readOnly: true
    {{- end }}
  {{- with $agent.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $agent.securityContext | nindent 4 }}
{{- end }}

{{/*
The sidecar's volumes, for the pod's `volumes:`; the argument is as for
biometrics.agentSidecar. The trust ConfigMap is optional so the pod starts before the
operator first publishes it; the agent reads the key when a request comes.
*/}}
{{- define "biometrics.agentVolumes" -}}
- name: biometrics-profiles
  {{- if .Values.profiles.claimName }}
  persistentVolumeClaim:
    claimName: {{ .Values.profiles.claimName }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: biometrics-trust
  configMap:
    name: biometrics-trust
    optional: true
{{- if .Values.agent.tls.enabled }}
- name: biometrics-agent-tls
  secret:
    secretName: {{ required "agent.tls.secretName is required with agent.tls.enabled" .Values.agent.tls.secretName }}
{{- end }}
{{- end }}

{{/*
The pod-template annotation that tells the operator the agent's port.
*/}}
{{- define "biometrics.agentPodAnnotations" -}}
biometrics.io/agent-port: {{ .Values.agent.port | quote }}
{{- end }}

{{/*
The pod-template labels networkPolicy.agentPodSelector selects by default.
*/}}
{{- define "biometrics.agentPodLabels" -}}
{{- with .Values.agent.podLabels }}
{{- toYaml . }}
{{- end }}
{{- end }}
