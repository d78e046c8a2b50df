-- Argo CD health check for mlops.dev/TrainingJob (resource.customizations.health.mlops.dev_TrainingJob).
-- status.phase: Pending | Queued | Suspended | Running | Succeeded | Failed; status.failure: {reason, message}.
local function condition(obj, type_)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == type_ then return c end
    end
  end
  return nil
end

local hs = {status = "Progressing", message = "Waiting for the operator to observe the TrainingJob"}
if obj.status == nil then return hs end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local valid = condition(obj, "Valid")
if valid ~= nil and valid.status == "False" then
  return {status = "Degraded", message = (valid.reason or "Invalid") .. ": " .. (valid.message or "")}
end

local phase = obj.status.phase
if phase == "Succeeded" then
  local msg = "Training succeeded"
  if obj.status.modelVersion ~= nil then msg = msg .. ": model version " .. tostring(obj.status.modelVersion) end
  return {status = "Healthy", message = msg}
elseif phase == "Failed" then
  local msg = "Training failed"
  if obj.status.failure ~= nil then
    msg = (obj.status.failure.reason or "Failed") .. ": " .. (obj.status.failure.message or "")
  end
  return {status = "Degraded", message = msg}
elseif phase == "Suspended" then
  return {status = "Suspended", message = "The TrainingJob is suspended (spec.scheduling.suspend)"}
elseif phase == "Running" then
  local msg = "Training"
  local p = obj.status.progress
  if p ~= nil and p.summary ~= nil then
    msg = msg .. ": epoch " .. p.summary
  end
  return {status = "Progressing", message = msg}
elseif phase == "Queued" then
  return {status = "Progressing", message = "Queued (waiting for Kueue admission)"}
elseif phase == "Pending" then
  local ready = condition(obj, "Ready")
  local msg = "Pending"
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then msg = ready.message end
  return {status = "Progressing", message = msg}
end
return hs
