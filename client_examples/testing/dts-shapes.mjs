// Prints, as JSON, the shapes notifier-client.d.ts declares, resolved by the TypeScript
// checker: for each named type (and each entry of Requests, Acks and EventMap) its
// properties with their JSON kinds and optionality. tests/test_typescript_types.py compares
// them with the service's pydantic models.
import { resolve } from "node:path";
import ts from "typescript";

const file = resolve(import.meta.dirname, "..", "notifier-client.d.ts");
const program = ts.createProgram([file], { strict: true, noEmit: true, skipLibCheck: true });
const checker = program.getTypeChecker();
const source = program.getSourceFile(file);
const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(source));
const declared = (name) => checker.getDeclaredTypeOfSymbol(exported.find((s) => s.name === name));

// The JSON kinds a type allows: string, number, boolean, null, object, any, and array:<kinds
// of its items>.
function kinds(type) {
  if (type.flags & ts.TypeFlags.TypeParameter) {  // Envelope<T, Type>: what it is bound by
    const constraint = checker.getBaseConstraintOfType(type);
    return constraint && constraint !== type ? kinds(constraint) : ["any"];
  }
  if (type.isUnion()) return [...new Set(type.types.flatMap(kinds))].sort();
  const f = type.flags;
  if (f & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return ["any"];
  if (f & ts.TypeFlags.StringLike) return ["string"];
  if (f & ts.TypeFlags.NumberLike) return ["number"];
  if (f & ts.TypeFlags.BooleanLike) return ["boolean"];
  if (f & ts.TypeFlags.Null) return ["null"];
  if (f & ts.TypeFlags.Undefined) return [];
  if (checker.isArrayType(type)) {
    return [`array:${kinds(checker.getTypeArguments(type)[0]).join("|")}`];
  }
  return ["object"];
}

// A union's properties are optional unless every member has them (e.g. {ids} | {all}).
function shape(type) {
  const members = type.isUnion() ? type.types : [type];
  const out = {};
  for (const member of members) {
    for (const prop of checker.getPropertiesOfType(member)) {
      const propType = checker.getTypeOfSymbol(prop);
      const optional = (prop.flags & ts.SymbolFlags.Optional) !== 0 || members.length > 1;
      const previous = out[prop.name];
      out[prop.name] = {
        kinds: [...new Set([...(previous?.kinds ?? []), ...kinds(propType)])].sort(),
        optional: optional || previous?.optional === true,
      };
    }
  }
  const indexed = members.some((m) => checker.getIndexInfosOfType(m).length > 0);
  return { properties: out, open: indexed };
}

const entries = (name) => Object.fromEntries(
  checker.getPropertiesOfType(declared(name)).map((p) => [p.name, shape(checker.getTypeOfSymbol(p))]),
);
const literals = (name) => declared(name).types.map((t) => t.value).sort();

console.log(JSON.stringify({
  types: Object.fromEntries(
    ["Task", "Notification", "Envelope", "ErrorBody", "Position", "PresentUser", "Session"]
      .map((name) => [name, shape(declared(name))]),
  ),
  errorCodes: literals("ErrorCode"),
  taskStatuses: literals("TaskStatus"),
  requests: entries("Requests"),
  acks: entries("Acks"),
  events: Object.fromEntries(
    checker.getPropertiesOfType(declared("EventMap")).map((p) => {
      const envelope = checker.getTypeOfSymbol(p);
      const data = checker.getTypeOfSymbol(checker.getPropertyOfType(envelope, "data"));
      return [p.name, shape(data)];
    }),
  ),
}));
