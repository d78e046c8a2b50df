-- Argo CD health check for mlops.dev/ModelDeployment (resource.customizations.health.mlops.dev_ModelDeployment).
-- Conditions: Valid, ModelResolved, ChallengerResolved, Available, Progressing, Ready.
local function condition(obj, type_)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type_ then return c end
    end
  end
  return nil
end
local function describe(c)
  return (c.reason or c.type) .. ": " .. (c.message or "")
end

if obj.status == nil or obj.status.conditions == nil then
  return {status = "Progressing", message = "Waiting for the operator to observe the ModelDeployment"}
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  return {status = "Progressing", message = "Waiting for the operator to observe generation " .. generation}
end

local valid = condition(obj, "Valid")
if valid ~= nil and valid.status == "False" then
  return {status = "Degraded", message = describe(valid)}
end
local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "True" then
  local msg = "Serving"
  if obj.status.resolvedVersion ~= nil then msg = msg .. " version " .. tostring(obj.status.resolvedVersion) end
  return {status = "Healthy", message = msg}
end
-- A model that cannot be resolved while nothing is served yet is a real problem (wrong name/alias/version,
-- registry down); while an older version keeps serving, the operator retries and the app stays Progressing.
local resolved = condition(obj, "ModelResolved")
if resolved ~= nil and resolved.status == "False" and obj.status.resolvedVersion == nil then
  return {status = "Degraded", message = describe(resolved)}
end
local progressing = condition(obj, "Progressing")
local available = condition(obj, "Available")
-- The rollout finished but no replica is available (crash loop, unschedulable, image pull errors).
if ready ~= nil and ready.status == "False" and available ~= nil and available.status == "False"
    and progressing ~= nil and progressing.status == "False" then
  return {status = "Degraded", message = describe(available)}
end
if ready ~= nil then
  return {status = "Progressing", message = describe(ready)}
end
return {status = "Progressing", message = "Rolling out"}
