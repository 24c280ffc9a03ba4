-- Test cases for health.lua, in the spirit of Argo CD's own resource_customizations tests.
--   lua5.4 health_test.lua        (run from this folder, or pass the folder as the first argument)
local dir = arg[1] or "."
local function health(o)
  local env = setmetatable({ obj = o }, { __index = _G })
  local fn = assert(loadfile(dir .. "/health.lua", "t", env))
  return fn()
end

local function cond(t, s, reason, message)
  return { type = t, status = s, reason = reason, message = message }
end

local cases = {
  { "no status yet", { metadata = { generation = 1 }, spec = {} }, "Progressing" },
  { "suspended", { metadata = { generation = 2 }, spec = { suspend = true }, status = { observedGeneration = 1 } }, "Suspended" },
  { "old generation observed", {
      metadata = { generation = 3 }, spec = {},
      status = { observedGeneration = 2, conditions = { cond("Ready", "True", "Serving", "1/1") } } }, "Progressing" },
  { "ready", {
      metadata = { generation = 3 }, spec = {},
      status = { observedGeneration = 3, conditions = { cond("Ready", "True", "Serving", "1/1 replicas ready"),
                                                        cond("Reconciling", "False", "Reconciled", ""),
                                                        cond("Stalled", "False", "NotStalled", "") } } }, "Healthy" },
  { "rolling out", {
      metadata = { generation = 1 }, spec = {},
      status = { observedGeneration = 1, conditions = { cond("Ready", "False", "Progressing", "0/1"),
                                                        cond("Reconciling", "True", "Progressing", "0/1") } } }, "Progressing" },
  { "stalled wins over ready", {
      metadata = { generation = 1 }, spec = {},
      status = { observedGeneration = 1, conditions = { cond("Ready", "False", "StorageUnavailable", "no class"),
                                                        cond("Stalled", "True", "StorageUnavailable", "StorageClass gold does not exist") } } }, "Degraded" },
  { "no Ready condition yet", { metadata = { generation = 1 }, spec = {}, status = { observedGeneration = 1, conditions = {} } }, "Progressing" },
}

local passed, failed = 0, 0
for _, c in ipairs(cases) do
  local name, o, want = c[1], c[2], c[3]
  local got = health(o)
  if got.status == want and type(got.message) == "string" then
    passed = passed + 1
    print("  ok    " .. name)
  else
    failed = failed + 1
    print("  FAIL  " .. name .. ": want " .. want .. ", got " .. tostring(got.status))
  end
end
print(passed .. " passed, " .. failed .. " failed")
os.exit(failed == 0 and 0 or 1)
