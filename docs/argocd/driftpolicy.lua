-- Argo CD health check for mlops.dev/DriftPolicy (resource.customizations.health.mlops.dev_DriftPolicy).
-- Conditions: Valid, Ready, Drifted, Retraining, Promoted, AwaitingApproval.
-- Drift is what the policy exists to report: a drifted model is shown as Degraded (with the evaluation),
-- a retrain in flight as Progressing, and a policy that evaluates without drift as Healthy.
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
  return {status = "Progressing", message = "Waiting for the first evaluation"}
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
if ready ~= nil and ready.status == "False" then
  return {status = "Degraded", message = describe(ready)}
end
local awaiting = condition(obj, "AwaitingApproval")
if awaiting ~= nil and awaiting.status == "True" then
  return {status = "Suspended", message = describe(awaiting)}
end
local retraining = condition(obj, "Retraining")
if retraining ~= nil and retraining.status == "True" then
  return {status = "Progressing", message = describe(retraining)}
end
local drifted = condition(obj, "Drifted")
if drifted ~= nil and drifted.status == "True" then
  return {status = "Degraded", message = describe(drifted)}
end
if ready ~= nil and ready.status == "True" then
  local msg = "Evaluating"
  if drifted ~= nil then msg = describe(drifted) end
  return {status = "Healthy", message = msg}
end
return {status = "Progressing", message = "Waiting for the first evaluation"}
